"""``load_config``: each config parsed once for all the config tests (a deep copy per call).

``Config.fromfile`` re-reads a config's whole ``_base_`` tree (and the toolboxes' bases)
every time, and test_configs, test_recipes and test_merged_configs each need every config.
Configs read environment variables (``{{$LSA_DEMO_EPOCHS:10}}``) when parsed: a test that
sets one must parse the config itself.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[2]
_PARSED: dict[str, Config] = {}


def _load_config(path: str) -> Config:
    if path not in _PARSED:
        _PARSED[path] = Config.fromfile(str(ROOT / path))
    return copy.deepcopy(_PARSED[path])


@pytest.fixture(scope='session')
def load_config():
    """``load_config(path)``: the merged config of a repository-relative path (a fresh copy)."""
    return _load_config
