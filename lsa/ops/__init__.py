"""lsa's attention ops: the SAN and ELSA kernels as PyTorch ops (CPU and CUDA).

Public functions (stable names): ``aggregation``, ``subtraction``,
``subtraction2``, ``elsa``, ``san_pairwise_attention``, ``san_pairwise_stats``,
``san_patchwise_attention``, ``san_patchwise_stats``. Their pure-PyTorch references
live in :mod:`lsa.ops.reference`.
"""
from ._ext import HAS_EXT, has_cuda_kernels, require_ext
from ._san_args import reflect_min_size
from .aggregation import Aggregation, aggregation
from .elsa import elsa
from .san_fused import san_pairwise_attention, san_pairwise_stats
from .san_patchwise import san_patchwise_attention, san_patchwise_stats
from .subtraction import Subtraction, Subtraction2, subtraction, subtraction2

__all__ = [
    'HAS_EXT', 'Aggregation', 'Subtraction', 'Subtraction2', 'aggregation', 'elsa',
    'has_cuda_kernels', 'reflect_min_size', 'require_ext', 'san_pairwise_attention',
    'san_pairwise_stats', 'san_patchwise_attention', 'san_patchwise_stats', 'subtraction',
    'subtraction2',
]
