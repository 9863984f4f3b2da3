"""ELSA-Swin (Zhou et al., "ELSA: Enhanced Local Self-Attention for Vision Transformer", 2021)."""
from __future__ import annotations

from lsa.models.layers.elsa_attention import ELSAAttention
from lsa.registry import MODELS

from .swin import CfgOrCfgs, SwinHost, _cfg_class, _per_stage

#: ELSA's q/k group width per Swin variant name.
GROUP_WIDTH = {**dict.fromkeys(['t', 'tiny'], 4), **dict.fromkeys(['s', 'small'], 8),
               **dict.fromkeys(['b', 'base'], 8)}


@MODELS.register_module()
class ELSASwin(SwinHost):
    """Swin with ELSA attention in stages 0-2 and window attention in stage 3.

    Exactly the official ELSA-Swin: ELSA blocks (kernel 7, ``qk_scale=1``,
    ``lam=0, gamma=1``, q/k width ``dim // 3 * 2`` rounded up to ``group_width``,
    no windows, no shift) in stages 0-2 and Swin window attention (window 7,
    shift 3 on odd blocks) in stage 3; mlp ratio 4; stochastic depth linear over
    all blocks. One class for classification (``out_indices=(3,)`` + global
    average pooling + linear head; ``norm3`` is the official final ``norm``) and
    det/seg (``out_indices=(0, 1, 2, 3)``, ``pad_small_map=True`` as the official
    det/seg backbones). Any input size works.

    ``attn_cfgs`` swaps the attention per stage, e.g. ELSA in all four stages
    (``attn_cfgs=dict(type='lsa.ELSAAttention')``) or window attention everywhere
    (``attn_cfgs=dict(type='lsa.ShiftWindowAttention')``: plain Swin). ELSA configs
    get the arch's ``group_width`` unless they set one.

    Args:
        arch: ``'tiny'``/``'small'``/``'base'`` (or ``'t'``/``'s'``/``'b'``) or a dict
            with ``embed_dims``, ``depths``, ``num_heads``, ``group_width``.
        attn_cfgs: Per-stage attention (one dict or four); default as published.
        **kwargs: :class:`~lsa.models.backbones.swin.SwinHost` arguments
            (``drop_path_rate``, ``out_indices``, ``pad_small_map``, ``frozen_stages``,
            ``norm_eval``, ``with_cp``, ``init_cfg``, ...).

    Example:
        >>> model = ELSASwin(arch='tiny', out_indices=(0, 1, 2, 3), pad_small_map=True)
        >>> [tuple(o.shape[1:]) for o in model(torch.rand(1, 3, 200, 333))]
        [(96, 50, 84), (192, 25, 42), (384, 13, 21), (768, 7, 11)]
    """

    #: Swin's zoo plus ELSA's q/k group width (official ``elsa_swin_{tiny,small,base}``).
    arch_zoo = {k: dict(v, group_width=GROUP_WIDTH[k]) for k, v in SwinHost.arch_zoo.items()}
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'group_width')
    #: The published attention layout: ELSA in stages 0-2, window attention in stage 3.
    default_attn_cfgs = (
        dict(type='lsa.ELSAAttention', kernel_size=7, qk_scale=1.0, lam=0, gamma=1),
    ) * 3 + (dict(type='lsa.ShiftWindowAttention', window_size=7),)

    def __init__(self, arch: str | dict = 'tiny', attn_cfgs: CfgOrCfgs = None,
                 **kwargs) -> None:
        arch_dict = self._resolve_arch(arch)
        n = len(arch_dict['depths'])
        if attn_cfgs is None:
            if n != len(self.default_attn_cfgs):
                raise ValueError(f'ELSASwin: the default attn_cfgs are for 4 stages; pass '
                                 f'attn_cfgs for a {n}-stage arch {arch}')
            attn_cfgs = self.default_attn_cfgs
        attn_cfgs = _per_stage(attn_cfgs, n, 'attn_cfgs', 'ELSASwin')
        for cfg in attn_cfgs:
            if issubclass(_cfg_class(cfg), ELSAAttention):
                cfg.setdefault('group_width', arch_dict['group_width'])
        super().__init__(arch=arch_dict, attn_cfgs=attn_cfgs, **kwargs)
