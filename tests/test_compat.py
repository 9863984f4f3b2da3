"""Each lsa.compat fix, with a check that the problem it fixes is real here."""
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


def _mmengine_style_checkpoint(path):
    """A checkpoint as mmengine's Runner writes it: the message hub pickles HistoryBuffer."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('lsa_compat_test')
    hub.update_scalar('train/loss', 0.5)
    torch.save({'meta': {'epoch': 1}, 'state_dict': {'w': torch.ones(2)},
                'message_hub': hub.state_dict()}, path)


def test_mmengine_checkpoints_load_despite_weights_only_default(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    path = str(tmp_path / 'epoch_1.pth')
    _mmengine_style_checkpoint(path)
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path)  # the torch >= 2.6 default that breaks mmengine 0.10.7
    ckpt = _load_checkpoint(path, map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert 'train/loss' in ckpt['message_hub']['log_scalars']


def test_mmengine_checkpoint_loading_needs_the_fix(tmp_path):
    """Without lsa (hence without the fix) mmengine cannot load its own checkpoint."""
    path = str(tmp_path / 'epoch_1.pth')
    _mmengine_style_checkpoint(path)
    res = _run(f"""
        from mmengine.runner.checkpoint import _load_checkpoint
        _load_checkpoint({path!r}, map_location='cpu')
    """)
    assert res.returncode != 0 and 'Weights only load failed' in res.stderr
    res = _run(f"""
        import lsa
        from mmengine.runner.checkpoint import _load_checkpoint
        assert 'message_hub' in _load_checkpoint({path!r}, map_location='cpu')
    """)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(torch.cuda.is_available() or torch.version.cuda is not None,
                    reason='the torchvision shim only matters on a CPU-only torch')
def test_torchvision_and_mmpretrain_import_on_cpu_torch():
    pytest.importorskip('torchvision')
    res = _run('import torchvision')
    assert res.returncode != 0 and 'torchvision::nms' in res.stderr, (
        'torchvision imports without the shim: the fix may no longer be needed')
    res = _run("""
        import lsa, torchvision, mmpretrain.models, mmdet.models
        from torchvision.ops import box_iou
        import torch
        assert box_iou(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[0., 0, 2, 2]])).item() == 1
    """)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only torch behaviour')
def test_cpu_set_device_is_a_noop():
    res = _run('import torch; torch.cuda.set_device(0)')
    assert res.returncode != 0  # what mmengine's dist init hits on CPU torch
    torch.cuda.set_device(0)  # patched by lsa.compat: no error


def test_numpy_in1d_restored(monkeypatch):
    monkeypatch.delattr(np, 'in1d', raising=False)
    assert compat.patch_numpy_aliases()
    assert np.in1d(np.array([1, 2, 3]), np.array([2])).tolist() == [False, True, False]


def test_apply_all_is_idempotent():
    compat.apply_all()
    compat.apply_all()
