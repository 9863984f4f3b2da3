"""Fixes for what the frozen OpenMMLab releases break on torch 2.13 / numpy, applied on request.

Nothing here runs at import: ``import lsa`` (``lsa.ops``, ``lsa.models``) changes nothing
outside lsa. :func:`apply` applies every fix; lsa's tools call it first, and a config run
by a toolbox's own tools gets it with ``custom_imports = dict(imports=['lsa.compat_apply',
'lsa.models'])``. Each fix is small, idempotent, guarded and tested in ``tests/test_compat.py``.

1. Safe checkpoint loading: torch >= 2.6 defaults to ``weights_only=True``, so mmengine 0.10.7
   cannot load the checkpoints it saves (its message hub pickles ``HistoryBuffer`` and numpy
   objects). :func:`lsa.apis.checkpoint_loading.install_mmengine_loaders` makes mmengine's
   local, http(s) and s3/petrel loaders use ``weights_only=True`` plus an allowlist of exactly
   those types; anything else is refused unless the user trusts that file.
2. The PyPI torchvision wheel is CUDA-only; on a CPU torch its ``_C`` fails to load and
   ``import torchvision`` raises because ``torchvision::nms`` has no schema. mmpretrain (and,
   through it, mmdet) import torchvision, so :func:`shim_torchvision_schemas` defines the
   ``nms``/``qnms`` schemas before the first import when the compiled ops cannot load.
3. mmengine's distributed init calls ``torch.cuda.set_device`` unconditionally; on a CPU-only
   torch :func:`patch_cpu_set_device` makes it a no-op so gloo runs work.
4. ``np.in1d`` was removed in numpy 2.4; mmpretrain's retrieval metrics use it.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

_TV_LIB = None  # keeps the torchvision schema library alive


def _torchvision_ops_loadable() -> bool:
    """True if torchvision's compiled ops would load (never imports torchvision)."""
    try:
        spec = importlib.util.find_spec('torchvision')
    except (ImportError, ValueError):
        return True  # not importable at all: nothing to shim
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to shim
    if torch.cuda.is_available():
        return True
    # The PyPI wheel links libtorch_cuda: on a CPU torch its _C cannot load.
    return torch.version.cuda is not None


def shim_torchvision_schemas() -> bool:
    """Define ``torchvision::nms``/``qnms`` so torchvision imports on CPU torch."""
    global _TV_LIB
    if _TV_LIB is not None or _torchvision_ops_loadable():
        return False
    try:
        torch._C._dispatch_find_schema_or_throw('torchvision::nms', '')
        return False  # someone already defined it
    except RuntimeError:
        pass
    _TV_LIB = torch.library.Library('torchvision', 'DEF')
    for name in ('nms', 'qnms'):
        _TV_LIB.define(f'{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    return True


def patch_cpu_set_device() -> bool:
    """No-op ``torch.cuda.set_device`` on CPU-only torch (mmengine dist init)."""
    if torch.cuda.is_available() or getattr(torch.cuda.set_device, '_lsa_patched', False):
        return False

    def set_device(device) -> None:  # noqa: ARG001 - mirrors torch's signature
        return None

    set_device._lsa_patched = True
    torch.cuda.set_device = set_device
    return True


def patch_numpy_aliases() -> bool:
    """Restore ``np.in1d`` removed in numpy 2.4 (used by mmpretrain metrics)."""
    if hasattr(np, 'in1d'):
        return False
    np.in1d = np.isin
    return True


def apply() -> None:
    """Apply every fix (idempotent). Called by lsa's tools; configs name ``lsa.compat_apply``."""
    shim_torchvision_schemas()
    patch_cpu_set_device()
    patch_numpy_aliases()
    from lsa.apis.checkpoint_loading import install_mmengine_loaders
    install_mmengine_loaders()


apply_all = apply  # the earlier name
