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
