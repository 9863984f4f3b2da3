"""Pure-PyTorch references of lsa's ops (unfold-based, differentiable): test oracles.

They define the semantics index by index (see ``docs/ops.md``); the compiled
kernels are tested against them and they are tested against Python loops.
"""
from .elsa import elsa_ref  # noqa: F401
from .san import aggregation_ref, subtraction2_ref, subtraction_ref  # noqa: F401
from .san_fused import san_pairwise_ref, san_pairwise_stats_ref  # noqa: F401
from .san_patchwise import san_patchwise_ref, san_patchwise_stats_ref  # noqa: F401
