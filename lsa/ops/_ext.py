"""The one place that loads the compiled extension ``lsa._C``.

``HAS_EXT`` says whether it loaded; :func:`require_ext` raises one clear error
that says how to build it. Nothing else in lsa imports ``lsa._C``. Also the one rule for
compiled backward ops without a derivative: :func:`refuse_double_backward`.
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor

try:
    importlib.import_module('lsa._C')
    HAS_EXT = True
    EXT_ERROR: str | None = None
except ImportError as e:  # not built, or built against another torch
    HAS_EXT = False
    EXT_ERROR = str(e)

_BUILD_HINT = (
    'lsa._C (the compiled lsa ops) is not available: {err}\n'
    'Build it from the repository root with\n'
    '    pip install -e . --no-build-isolation\n'
    '(torch==2.13.0 must be installed first; set LSA_WITH_CUDA=1 to force CUDA kernels). '
    'Check the result with `python -m lsa.info`.')


def require_ext(op: str) -> None:
    """Raise a RuntimeError naming ``op`` and how to build ``lsa._C`` if it is missing."""
    if not HAS_EXT:
        raise RuntimeError(f'lsa.ops.{op}: ' + _BUILD_HINT.format(err=EXT_ERROR))


def require_kernels(op: str, t: Tensor) -> None:
    """The one fallback policy of lsa's ops: there is none. Run ``torch.ops.lsa.<op>_*`` on
    ``t``'s device or raise a RuntimeError that says why not and how to build (a missing or
    stale ``lsa._C``, or a CUDA tensor with a CPU-only build). The slow pure-PyTorch
    references (:mod:`lsa.ops.reference`) are never substituted silently."""
    require_ext(op)
    if not hasattr(torch.ops.lsa, f'{op}_forward'):
        raise RuntimeError(f'lsa.ops.{op}: lsa._C was built without this op (a stale build?); '
                           'rebuild it with `pip install -e . --no-build-isolation`')
    if isinstance(t, Tensor) and t.is_cuda and not has_cuda_kernels():
        raise RuntimeError(f'lsa.ops.{op}: lsa._C has no CUDA kernels (built without CUDA); '
                           'rebuild it with LSA_WITH_CUDA=1, or call '
                           f'lsa.ops.reference.{op}_ref explicitly')


def has_cuda_kernels() -> bool:
    """True if ``lsa._C`` was compiled with its CUDA kernels."""
    return HAS_EXT and bool(torch.ops.lsa._with_cuda())


def cuda_version() -> int | None:
    """CUDA version ``lsa._C`` was compiled with (e.g. 13000), or None."""
    if not has_cuda_kernels():
        return None
    return int(torch.ops.lsa._cuda_version())


def refuse_double_backward(ops: tuple[str, ...], message: str) -> None:
    """Give the compiled backward ops ``ops`` an autograd formula that raises
    NotImplementedError(``message``): without one, ``create_graph=True`` treats them as
    constants and a second-order term comes back silently zero."""
    def backward(ctx, *grads):
        raise NotImplementedError(message)

    for op in ops:
        torch.library.register_autograd(op, backward,
                                        setup_context=lambda ctx, inputs, output: None)
