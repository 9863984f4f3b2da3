"""Shared fixtures: seeding, registry-scope isolation, device parametrisation, loading the
repository's scripts; CPU threads per pytest-xdist worker; per-folder times."""
import copy
import importlib.util
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lsa.compat_apply  # noqa: F401  (lsa.compat.apply() before any toolbox import)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def pytest_configure(config):
    """Under pytest-xdist (pyproject's ``-n``), split the CPU cores between the workers: each
    worker's torch, and the commands its tests start, use ``cores // workers`` threads
    instead of every worker using all of them (oversubscribed OpenMP threads spin-wait)."""
    workers = os.environ.get('PYTEST_XDIST_WORKER_COUNT')
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ['OMP_NUM_THREADS'] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """Each test starts from the session's registry scope and leaves it as it found it.

    ``init_default_scope('mmdet')`` in one test would otherwise make a later test's
    ``mmpretrain`` build look in the mmdet registry: a failure that depends on test order.
    """
    from mmengine.registry import DefaultScope
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


REPO = Path(__file__).resolve().parents[1]


def _load_script(rel: str):
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(f'lsa_script_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def load_script():
    """``load_script('tools/train.py')``: a script of the repository as a module (its
    ``main(argv)`` is what the command runs), loaded from its file as the command would."""
    return _load_script


_FOLDER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add each test phase's duration to its folder's total (tests/<folder>/...)."""
    parts = report.nodeid.split('::')[0].split('/')
    folder = parts[1] if len(parts) > 2 else '(top level)'
    _FOLDER_SECONDS[folder] = _FOLDER_SECONDS.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Per-folder test time (summed over the workers under xdist), the figures
    docs/get_started.md quotes."""
    if not _FOLDER_SECONDS:
        return
    workers = getattr(terminalreporter.config.option, 'numprocesses', None)
    terminalreporter.section('time per test folder' + (
        ' (seconds of test run time, summed over the parallel workers)' if workers else ''))
    for folder, seconds in sorted(_FOLDER_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f'{seconds:8.1f} s  tests/{folder}')
