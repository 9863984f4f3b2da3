"""Task-agnostic blocks built on lsa.ops: the papers' attention and feed-forward modules.

Each block is registered in :data:`lsa.registry.MODELS`, so backbones (and
configs) choose them by dict, e.g. ``dict(type='lsa.ELSAAttention', ...)``.
"""
from .common import DropPath, Mlp, to_2tuple
from .elsa_attention import ELSAAttention
from .lesa_attention import LESAAttention
from .locality_ffn import LocalityFeedForward
from .san_attention import SANAttention, SANBottleneck
from .window_attention import ShiftWindowAttention

__all__ = [
    'DropPath', 'ELSAAttention', 'LESAAttention', 'LocalityFeedForward', 'Mlp', 'SANAttention',
    'SANBottleneck', 'ShiftWindowAttention', 'to_2tuple',
]
