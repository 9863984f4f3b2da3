"""The CPU allocator setting of a benchmark worker (``--malloc``), and its page-fault count.

PyTorch's CPU tensors come from glibc ``malloc``. With glibc's defaults a freed tensor of a
few MiB is handed back to the kernel (the heap top is trimmed, or the block was its own
``mmap``), so the next tensor of that size starts on fresh pages and its first write
faults every 4 KiB page in: about 2.5 ms for a (8, 196, 768) fp32 tensor on the
development machine, 5-15x the add that wrote it. Models that allocate more large
temporaries pay more of this, and with two threads it is a larger share of a step.

``glibc``: the environment as it is, with the two variables below removed (glibc's
defaults, unless the caller preloads another allocator or sets ``GLIBC_TUNABLES``).
``retain``: a fixed 32 MiB ``mmap`` threshold and no trimming, so freed blocks up to
32 MiB are reused without faults (close to the jemalloc/tcmalloc preload PyTorch's CPU
tuning guide suggests). Blocks above 32 MiB, glibc's largest mmap threshold on 64-bit,
are still fresh ``mmap``s under both settings (e.g. SAN's full-resolution stem maps).
Both sides of a comparison always run under the same setting.
"""
from __future__ import annotations

import os
import resource

MODES = ('glibc', 'retain')
_RETAIN = {'MALLOC_MMAP_THRESHOLD_': str(32 << 20), 'MALLOC_TRIM_THRESHOLD_': str(1 << 40)}


def worker_env(mode: str) -> dict[str, str]:
    """The environment for a worker process under allocator setting ``mode``."""
    if mode not in MODES:
        raise ValueError(f'--malloc must be one of {MODES}, got {mode!r}')
    env = {k: v for k, v in os.environ.items() if k not in _RETAIN}
    if mode == 'retain':
        env.update(_RETAIN)
    return env


def minor_faults() -> int:
    """Minor page faults of this process so far (each a first touch of a fresh page)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
