"""Checkpoint loading that never runs code stored in a file, unless the user trusts that file.

Every checkpoint lsa's tools read (``tools/test.py``, ``--resume``, ``load_from``,
``init_cfg=dict(type='Pretrained')``, ``demo/image_demo.py``, the converters, local
paths and http(s) URLs) goes through :func:`load_checkpoint_file`:

- ``torch.load(weights_only=True)`` with an allowlist of exactly the types that
  mmengine's own checkpoints (the message hub's ``HistoryBuffer``, numpy arrays,
  scalars and dtypes) and the official SAN / LESA / ELSA / LocalViT releases
  (``argparse.Namespace`` in ``args``) contain (:func:`checkpoint_safe_globals`);
- a file that needs anything else raises :class:`UntrustedCheckpointError`, which
  names the types and the two ways to trust that one file: the tool's
  ``--trust-checkpoint`` flag (:func:`trust_checkpoint`) or
  ``LSA_TRUST_CHECKPOINT=<path>[:<path>...]``;
- a file that is not a checkpoint at all raises :class:`NotACheckpointError`.

:func:`install_mmengine_loaders` (called by :func:`lsa.compat.apply`) makes mmengine's
``CheckpointLoader`` use it for local files, http(s) (plus ``torchvision://``,
``open-mmlab://`` and ``mmcls://``, which resolve to URLs) and ``s3://``/``petrel://``.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import os.path as osp
import pickle
import zipfile
from typing import IO, Any
from urllib.parse import urlparse

import numpy as np
import torch

__all__ = [
    'NotACheckpointError', 'TRUST_ENV', 'UntrustedCheckpointError', 'checkpoint_safe_globals',
    'install_mmengine_loaders', 'is_trusted', 'load_checkpoint_file', 'trust_checkpoint',
]

#: Environment variable listing trusted checkpoint files (``os.pathsep``-separated) or URLs.
TRUST_ENV = 'LSA_TRUST_CHECKPOINT'
DOCS = 'docs/get_started.md#loading-checkpoints'

_trusted: set[str] = set()
_logger = logging.getLogger(__name__)


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The file needs types outside the allowlist; loading it could run code from the file."""


class NotACheckpointError(ValueError):
    """The file is not something ``torch.save`` wrote (or it is truncated)."""


def _key(source: str) -> str:
    if '://' in source:
        return source
    return osp.realpath(osp.expanduser(source))


def trust_checkpoint(source: str) -> None:
    """Trust one file (or URL) for this process: it is loaded with ``weights_only=False``."""
    _trusted.add(_key(source))


def is_trusted(source: str) -> bool:
    """True if ``source`` was passed to :func:`trust_checkpoint` or is listed in ``$LSA_TRUST_CHECKPOINT``."""
    listed = {_key(p) for p in os.environ.get(TRUST_ENV, '').split(os.pathsep) if p}
    return _key(source) in _trusted or _key(source) in listed


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine's pickled ``HistoryBuffer`` needs it (its statistics methods) only."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):  # its defaults
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def checkpoint_safe_globals() -> list:
    """The allowlist: what mmengine checkpoints and the official releases pickle besides tensors.

    Found by saving checkpoints with mmengine's Runner and listing their globals with
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` (``tests/test_checkpoint_loading.py``
    keeps it honest). Numpy objects are listed under both their numpy 1 (``numpy.core``) and
    numpy 2 (``numpy._core``, ``numpy.dtypes``) names.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = np.core.multiarray if hasattr(np, 'core') else np._core.multiarray
    entries: list = [(HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
                     (_history_buffer_getattr, 'builtins.getattr'),
                     (argparse.Namespace, 'argparse.Namespace'),
                     (np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries += [(multiarray._reconstruct, f'{mod}._reconstruct'),
                    (multiarray.scalar, f'{mod}.scalar')]
    for code in '?bhilqBHILQefdgFDGSUO':  # every builtin numeric / string / object dtype
        cls = type(np.dtype(code))
        if cls is not np.dtype:  # numpy >= 1.25: one class per dtype, pickled by name
            entries.append((cls, f'numpy.dtypes.{cls.__name__}'))
    return entries


def _allowed_names() -> set[str]:
    return {name for _, name in checkpoint_safe_globals()}


def _describe(source: str | IO[bytes]) -> str:
    return source if isinstance(source, str) else getattr(source, 'name', '<stream>')


def _check_format(source: str | IO[bytes]) -> None:
    """Raise NotACheckpointError unless ``source`` is a torch zip archive or a pickle."""
    if isinstance(source, str):
        if not osp.isfile(source):
            raise FileNotFoundError(f'checkpoint {source!r} does not exist')
        with open(source, 'rb') as f:
            head = f.read(2)
        is_zip = zipfile.is_zipfile(source)
    else:
        pos = source.tell()
        head = source.read(2)
        source.seek(pos)
        is_zip = zipfile.is_zipfile(source)
        source.seek(pos)
    if not is_zip and not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise NotACheckpointError(
            f'{_describe(source)} is not a PyTorch checkpoint: it is neither a torch.save zip '
            'archive nor a pickle (an empty file, another format, or a save that was '
            'interrupted and left a truncated file)')


def _needed_types(source: str | IO[bytes], error: Exception) -> list[str]:
    names: list[str] = []
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(source)
    except Exception:  # legacy (non-zip) format: fall back to the unpickler's message
        pass
    if not isinstance(source, str):
        source.seek(0)
    names = sorted(set(names) - _allowed_names())
    if names:
        return names
    text = str(error)
    marker = 'GLOBAL '
    if marker in text:
        return [text.split(marker, 1)[1].split()[0]]
    return [text.strip().splitlines()[-1] if text.strip() else type(error).__name__]


def load_checkpoint_file(source: str | IO[bytes], map_location: Any = None,
                         trusted: bool | None = None) -> Any:
    """``torch.load`` a checkpoint without running code from it (see the module docstring).

    Args:
        source: A path or a binary file object.
        map_location: As for :func:`torch.load`.
        trusted: Load with ``weights_only=False``; None: only if :func:`is_trusted`.

    Raises:
        FileNotFoundError: No such file.
        NotACheckpointError: The file is not a ``torch.save`` file.
        UntrustedCheckpointError: It needs types outside :func:`checkpoint_safe_globals`;
            the message names them and how to trust the file.
    """
    _check_format(source)
    name = _describe(source)
    if trusted or (trusted is None and isinstance(source, str) and is_trusted(source)):
        _logger.warning('loading %s with weights_only=False: you trusted it (%s)', name,
                        TRUST_ENV if os.environ.get(TRUST_ENV) else '--trust-checkpoint')
        return torch.load(source, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not isinstance(source, str):
            source.seek(0)
        needed = _needed_types(source, err)
        raise UntrustedCheckpointError(
            f'refusing to load {name}: it needs {", ".join(needed)}, which the allowlist of '
            'mmengine / official-release checkpoint types does not contain, and unpickling it '
            'could run code stored in the file. If you trust this file, pass '
            f'--trust-checkpoint to the tool or set {TRUST_ENV}={name} (see {DOCS}).') from None
    except RuntimeError as err:
        if 'PytorchStreamReader' in str(err) or 'zip archive' in str(err):
            raise NotACheckpointError(f'{name} is not a PyTorch checkpoint: {err}') from None
        raise


def load_from_local(filename: str, map_location: Any = None) -> Any:
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location)


def _download(url: str, model_dir: str | None, progress: bool) -> str:
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    path = osp.join(model_dir, osp.basename(urlparse(url).path) or 'checkpoint.pth')
    if not osp.exists(path):
        torch.hub.download_url_to_file(url, path, progress=progress)
    return path


def load_from_http(filename: str, map_location: Any = None, model_dir: str | None = None,
               progress: bool = False) -> Any:
    """mmengine's http(s) scheme: rank 0 downloads into the hub cache, then every rank loads."""
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _download(filename, model_dir, progress)
    return load_checkpoint_file(path, map_location,
                                trusted=is_trusted(filename) or is_trusted(path))


def load_from_store(filename: str, map_location: Any = None) -> Any:
    """mmengine's ``s3://`` / ``petrel://`` scheme: bytes from the file backend, loaded safely."""
    from mmengine.fileio import get_file_backend
    buffer = io.BytesIO(get_file_backend(filename).get(filename))
    buffer.name = filename
    return load_checkpoint_file(buffer, map_location, trusted=is_trusted(filename))


def install_mmengine_loaders() -> None:
    """Point mmengine's ``CheckpointLoader`` schemes at :func:`load_checkpoint_file` (idempotent)."""
    import mmengine.runner.checkpoint as mm_ckpt
    loader = mm_ckpt.CheckpointLoader
    loader.register_scheme(prefixes='', loader=load_from_local, force=True)
    loader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)
    loader.register_scheme(prefixes=[r'(\S+\:)?s3://', r'(\S+\:)?petrel://'],
                           loader=load_from_store, force=True)
    # torchvision://, open-mmlab://, mmcls:// resolve a URL and call this module-level name
    mm_ckpt.load_from_http = load_from_http
