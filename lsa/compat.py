"""Fixes for what the frozen OpenMMLab releases break on torch 2.13 / numpy.

Imported first by :mod:`lsa`. Each fix is small, idempotent, guarded, and has a
test in ``tests/test_compat.py`` that fails without it.

1. ``torch.load`` defaults to ``weights_only=True`` (torch >= 2.6), so mmengine
   0.10.7 cannot load checkpoints that mmengine itself saved (its message hub
   pickles ``HistoryBuffer`` and numpy objects). We re-register mmengine's local
   and http(s) checkpoint schemes with ``weights_only=False`` (the fix mmengine
   merged upstream in #1670 but never released).
2. The PyPI torchvision wheel is CUDA-only; on a CPU torch its ``_C`` fails to
   load and ``import torchvision`` raises because ``torchvision::nms`` has no
   schema. mmpretrain (and, through it, mmdet) import torchvision, so we define
   the ``nms``/``qnms`` schemas before the first import when the compiled ops
   cannot load.
3. mmengine's distributed init calls ``torch.cuda.set_device`` unconditionally;
   on a CPU-only torch that is a no-op here so gloo runs work.
4. ``np.in1d`` was removed in numpy 2.4; mmpretrain's retrieval metrics use it.
"""
from __future__ import annotations

import importlib.util
import os.path as osp

import numpy as np
import torch

_TV_LIB = None  # keeps the torchvision schema library alive


def _torch_load_trusted(filename: str, map_location=None):
    return torch.load(filename, map_location=map_location, weights_only=False)


def patch_mmengine_checkpoint_loading() -> bool:
    """Make mmengine load its own checkpoints again (``weights_only=False``)."""
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:  # pragma: no cover - mmengine is a core dependency
        return False

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return _torch_load_trusted(filename, map_location)

    @CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)
    def load_from_http(filename, map_location=None, model_dir=None, progress=True):
        import mmengine.utils.dl_utils.hub as hub
        from mmengine.utils.dl_utils import load_url
        original = hub.torch.load
        hub.torch.load = lambda f, map_location=None: original(
            f, map_location=map_location, weights_only=False)
        try:
            return load_url(filename, model_dir=model_dir,
                            map_location=map_location, progress=progress)
        finally:
            hub.torch.load = original

    return True


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


def apply_all() -> None:
    """Apply every fix; safe to call more than once."""
    patch_mmengine_checkpoint_loading()
    shim_torchvision_schemas()
    patch_cpu_set_device()
    patch_numpy_aliases()


apply_all()
