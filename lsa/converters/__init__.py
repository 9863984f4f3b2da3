"""Converters from the official SAN / LESA / ELSA / LocalViT checkpoints to lsa keys.

One module per upstream release, each built from pure functions ``dict -> dict``; the CLIs in
``tools/model_converters/`` are thin wrappers. Every family has the same two entry points:

- ``convert_<family>_checkpoint(ckpt, ...) -> (state_dict, meta)``: a loaded official file ->
  a strictly checked lsa state dict (``convert_elsa_checkpoint``, ``convert_lesa_checkpoint``,
  ``convert_san_checkpoint``, ``convert_localvit_checkpoint``);
- ``infer_<family>_arch(state_dict)``: the published variant an official state dict holds
  (``infer_elsa_arch``, ``infer_lesa_arch``, ``infer_san_arch``, ``infer_localvit_arch``).

The former names (``convert_elsa``, ``convert_lesa``, ``convert_san``, ``convert_checkpoint``;
``infer_arch``, ``infer_lesa_config``, ``detect_arch``) remain as aliases.
"""
