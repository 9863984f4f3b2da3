"""lsa.compat: nothing happens at import; each fix of apply() is needed and works."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lsa import compat


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


#: Prints every name lsa.compat.apply() touches outside lsa, as comparable strings.
_SNAPSHOT = """
    def snapshot():
        import numpy as np, torch
        import mmengine.runner.checkpoint as ck
        try:
            torch._C._dispatch_find_schema_or_throw('torchvision::nms', '')
            tv = True
        except RuntimeError:
            tv = False
        return {'set_device': torch.cuda.set_device.__module__ + '.'
                + torch.cuda.set_device.__qualname__,
                'np.in1d': repr(np.__dict__.get('in1d')), 'torchvision::nms': tv,
                'schemes': {k: f.__module__ + '.' + f.__qualname__
                            for k, f in ck.CheckpointLoader._schemes.items()},
                'load_from_http': ck.load_from_http.__module__}
"""


def test_importing_lsa_changes_nothing_outside_it():
    res = _run(textwrap.dedent(_SNAPSHOT) + textwrap.dedent("""
        import numpy as np
        np.__dict__.pop('in1d', None)  # as on numpy >= 2.4, so the alias would show
        before = snapshot()
        import lsa, lsa.ops, lsa.models, lsa.registry, lsa.converters.common, lsa.apis.cli
        import lsa.apis.runner_config, lsa.apis.checkpoint_loading, lsa.engine
        assert snapshot() == before, (before, snapshot())
        from lsa.compat import apply
        apply()
        after = snapshot()
        changed = sorted(k for k in before if before[k] != after[k])
        print(changed)
    """))
    assert res.returncode == 0, res.stderr
    changed = res.stdout.split('\n')[-2]
    # the snapshot covers what apply() changes, so the import check above can fail
    assert "'schemes'" in changed and "'load_from_http'" in changed and "'np.in1d'" in changed
    if not torch.cuda.is_available():
        assert "'set_device'" in changed
    if torch.version.cuda is None:
        assert "'torchvision::nms'" in changed


def _mmengine_style_checkpoint(path):
    """A checkpoint as mmengine's Runner writes it: the message hub pickles HistoryBuffer."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('lsa_compat_test')
    hub.update_scalar('train/loss', 0.5)
    torch.save({'meta': {'epoch': 1}, 'state_dict': {'w': torch.ones(2)},
                'message_hub': hub.state_dict()}, path)


#: Runs each named check of ``CHECKS`` in this interpreter and prints {name: error or None}.
_CHECK_RUNNER = """
    import json, traceback
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = None
        except BaseException:
            results[name] = traceback.format_exc()
    print('RESULTS ' + json.dumps(results))
"""


def _checks(prelude: str, checks: str, path: str) -> dict:
    """One fresh interpreter: ``prelude``, then every check (their results by name)."""
    res = _run(textwrap.dedent(prelude) + f'CKPT = {path!r}\n' + textwrap.dedent(checks)
               + textwrap.dedent(_CHECK_RUNNER))
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith('RESULTS ')]
    assert res.returncode == 0 and lines, res.stderr
    return json.loads(lines[-1][len('RESULTS '):])


_CHECKS = """
    def set_device():
        import torch
        torch.cuda.set_device(0)

    def load_mmengine_checkpoint():
        from mmengine.runner.checkpoint import _load_checkpoint
        ckpt = _load_checkpoint(CKPT, map_location='cpu')
        assert 'train/loss' in ckpt['message_hub']['log_scalars']

    def toolboxes_with_torchvision():  # last: a failed torchvision import leaves debris
        import torch, torchvision, mmpretrain.models, mmdet.models
        from torchvision.ops import box_iou
        assert box_iou(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[0., 0, 2, 2]])).item() == 1

    def loader_scheme_is_lsas():
        import mmengine.runner.checkpoint as ck
        assert ck.CheckpointLoader._schemes[''].__module__ == 'lsa.apis.checkpoint_loading'

    CHECKS = dict(set_device=set_device, load=load_mmengine_checkpoint,
                  scheme=loader_scheme_is_lsas, toolboxes=toolboxes_with_torchvision)
"""


@pytest.fixture(scope='module')
def fresh_results(tmp_path_factory) -> dict:
    """The same checks in two fresh interpreters: with lsa imported only, and after
    ``import lsa.compat_apply`` (two start-ups for every fix, instead of two per fix)."""
    path = str(tmp_path_factory.mktemp('compat') / 'epoch_1.pth')
    _mmengine_style_checkpoint(path)
    return {'without': _checks('import lsa.models\n', _CHECKS, path),
            'with': _checks('import lsa.compat_apply\n', _CHECKS, path)}


def test_compat_apply_module_applies_on_import(fresh_results):
    assert fresh_results['without']['scheme'] is not None  # import lsa alone: mmengine's
    assert fresh_results['with']['scheme'] is None, fresh_results['with']['scheme']


def test_mmengine_checkpoint_loading_needs_the_fix(fresh_results):
    """Without apply() mmengine cannot load its own checkpoint; with it, it can (safely)."""
    assert 'Weights only load failed' in (fresh_results['without']['load'] or '')
    assert fresh_results['with']['load'] is None, fresh_results['with']['load']


@pytest.mark.skipif(torch.cuda.is_available() or torch.version.cuda is not None,
                    reason='the torchvision shim only matters on a CPU-only torch')
def test_torchvision_and_mmpretrain_import_on_cpu_torch(fresh_results):
    pytest.importorskip('torchvision')
    assert 'torchvision::nms' in (fresh_results['without']['toolboxes'] or ''), (
        'torchvision imports without the shim: the fix may no longer be needed')
    assert fresh_results['with']['toolboxes'] is None, fresh_results['with']['toolboxes']


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only torch behaviour')
def test_cpu_set_device_is_a_noop_after_apply(fresh_results):
    assert fresh_results['without']['set_device'] is not None  # what mmengine's gloo init hits
    assert fresh_results['with']['set_device'] is None, fresh_results['with']['set_device']


def test_numpy_in1d_restored(monkeypatch):
    monkeypatch.delattr(np, 'in1d', raising=False)
    assert compat.patch_numpy_aliases()
    assert np.in1d(np.array([1, 2, 3]), np.array([2])).tolist() == [False, True, False]


def test_apply_is_idempotent_and_old_names_remain():
    compat.apply()
    compat.apply()
    assert compat.apply_all is compat.apply
    import lsa.apis.runner_config as new
    import lsa.runner_config as old
    assert old.apply_resume is new.apply_resume and old.toolbox_of is new.toolbox_of
