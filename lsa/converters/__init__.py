"""Converters from the official SAN / LESA / ELSA / LocalViT checkpoints to lsa keys.

One module per upstream release, each a pure function ``dict -> dict``; the
CLIs in ``tools/model_converters/`` are thin wrappers.
"""
