"""The merged value of every published config is pinned (merged_configs.json beside this file).

``fingerprints(path)`` maps each top-level key of the merged config (``Config.fromfile``) to a
short SHA-256 of its normalised value, so a refactor of the ``_base_`` tree (``_base_/models``,
sibling configs inheriting one another) that changes any effective value fails here and names
the key that moved. A recipe change regenerates the snapshot on purpose, and its diff shows
which configs and keys moved:
    PYTHONPATH=. python tests/configs/test_merged_configs.py --update
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

import lsa.compat_apply  # noqa: F401  (compat fixes before any toolbox import)

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name('merged_configs.json')


def published_configs() -> list[str]:
    """Every config a user runs: all of configs/ except ``_base_`` fragments."""
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'configs').rglob('*.py')
                  if '_base_' not in p.parts)


def normalise(node):
    """JSON-able form that keeps tuple/list apart and sorts dict keys."""
    if isinstance(node, dict):
        return {str(k): normalise(v) for k, v in sorted(node.items(), key=lambda kv: str(kv[0]))}
    if isinstance(node, tuple):
        return {'__tuple__': [normalise(v) for v in node]}
    if isinstance(node, list):
        return [normalise(v) for v in node]
    if isinstance(node, (str, int, float, bool)) or node is None:
        return node
    return repr(node)


def fingerprints(path: str, load_config=None) -> dict[str, str]:
    """Top-level key -> 16-hex-digit hash of the merged config of ``path``.

    Keys with a leading underscore are composition helpers (``_elsa_swin_t``, ``_short_sides``):
    no runner reads them, their effect shows in the keys built from them, so they are skipped.
    """
    from mmengine.config import Config

    load = load_config or (lambda p: Config.fromfile(str(ROOT / p)))
    cfg = load(path).to_dict()
    return {key: hashlib.sha256(json.dumps(normalise(val), sort_keys=True).encode())
            .hexdigest()[:16] for key, val in sorted(cfg.items()) if not key.startswith('_')}


def update() -> None:
    if sys.argv[1:] != ['--update']:
        raise SystemExit(__doc__)
    snap = {path: fingerprints(path) for path in published_configs()}
    SNAPSHOT.write_text(json.dumps(snap, indent=1, sort_keys=True) + '\n')
    print(f'wrote {len(snap)} configs to {SNAPSHOT}')


STORED = json.loads(SNAPSHOT.read_text())


def test_snapshot_lists_exactly_the_published_configs():
    assert sorted(STORED) == published_configs()


@pytest.mark.parametrize('path', sorted(STORED))
def test_merged_config_unchanged(path, load_config):
    now = fingerprints(path, load_config)
    before = {k: v for k, v in STORED[path].items() if not k.startswith('_')}
    moved = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    assert not moved, f'{path}: merged value changed for top-level keys {moved}'


if __name__ == '__main__':
    update()
