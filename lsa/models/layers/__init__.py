"""Task-agnostic blocks built on lsa.ops: the papers' attention and feed-forward modules.

Each block is registered in :data:`lsa.registry.MODELS`, so backbones (and
configs) choose them by dict, e.g. ``dict(type='lsa.ELSAAttention', ...)``.
"""
from . import common, elsa_attention, lesa_attention, locality_ffn, san_attention, window_attention  # noqa: F401
from .common import DropPath, Mlp, to_2tuple

__all__ = ['DropPath', 'Mlp', 'to_2tuple']
