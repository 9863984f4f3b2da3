"""Shared fixtures: seeding and device parametrisation."""
import random

import numpy as np
import pytest
import torch

import lsa.compat_apply  # noqa: F401  (lsa.compat.apply() before any toolbox import)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


_FOLDER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add each test phase's duration to its folder's total (tests/<folder>/...)."""
    parts = report.nodeid.split('::')[0].split('/')
    folder = parts[1] if len(parts) > 2 else '(top level)'
    _FOLDER_SECONDS[folder] = _FOLDER_SECONDS.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Per-folder wall time, the figures docs/get_started.md quotes."""
    if not _FOLDER_SECONDS:
        return
    terminalreporter.section('time per test folder')
    for folder, seconds in sorted(_FOLDER_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f'{seconds:8.1f} s  tests/{folder}')
