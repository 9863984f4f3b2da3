"""Safe checkpoint loading: payloads refused on every mmengine path, real checkpoints load."""
import argparse
import functools
import http.server
import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_checkpoint

from lsa.apis.checkpoint_loading import (
    TRUST_ENV,
    NotACheckpointError,
    UntrustedCheckpointError,
    checkpoint_safe_globals,
    load_checkpoint_file,
    trust_checkpoint,
)
from lsa.compat import apply

apply()


def _refused(call, marker):
    with pytest.raises(UntrustedCheckpointError) as info:
        call()
    msg = str(info.value)
    assert 'io.open' in msg and '--trust-checkpoint' in msg and TRUST_ENV in msg, msg
    assert not marker.exists()


def test_payload_refused_on_every_mmengine_path(payload):
    path, marker = payload
    _refused(lambda: load_checkpoint_file(path), marker)
    _refused(lambda: _load_checkpoint(path, map_location='cpu'), marker)  # resume, load_from
    _refused(lambda: load_checkpoint(torch.nn.Linear(2, 1), path), marker)
    from mmengine.model import BaseModule

    class Net(BaseModule):  # init_cfg=dict(type='Pretrained')
        def __init__(self):
            super().__init__(init_cfg=dict(type='Pretrained', checkpoint=path))
            self.w = torch.nn.Parameter(torch.zeros(2))

    _refused(lambda: Net().init_weights(), marker)


def test_trusting_the_file_by_flag_or_env(payload, make_payload, tmp_path, monkeypatch):
    path, marker = payload
    write_payload = make_payload
    other = write_payload(tmp_path / 'other.pth', tmp_path / 'OTHER')
    monkeypatch.setenv(TRUST_ENV, path)
    assert torch.equal(load_checkpoint_file(path)['state_dict']['w'], torch.ones(2))
    assert marker.exists()  # trusted: the payload did run, so the refusals above are real
    _refused(lambda: load_checkpoint_file(other), tmp_path / 'OTHER')  # only that file
    monkeypatch.delenv(TRUST_ENV)
    trust_checkpoint(other)
    load_checkpoint_file(other)
    assert (tmp_path / 'OTHER').exists()


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    with pytest.raises(NotACheckpointError, match=r'notes\.txt is not a PyTorch checkpoint'):
        load_checkpoint_file(str(text))
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.ones(3)}, str(good))
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(NotACheckpointError, match='interrupted'):
        _load_checkpoint(str(truncated))
    with pytest.raises(FileNotFoundError):
        _load_checkpoint(str(tmp_path / 'missing.pth'))


def test_runner_checkpoints_need_exactly_the_allowlist(toy_runner, tmp_path):
    """A checkpoint mmengine's Runner writes loads; every global it needs is allowlisted."""
    runner = toy_runner(tmp_path / 'w', max_epochs=2)
    runner.train()
    path = str(tmp_path / 'w' / 'epoch_2.pth')
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    allowed = {name for _, name in checkpoint_safe_globals()}
    assert needed and needed <= allowed, needed - allowed
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path)  # what torch alone does with it
    ckpt = _load_checkpoint(path, map_location='cpu')
    hub = ckpt['message_hub']
    assert len(hub['log_scalars']['train/loss'].data[0]) == 8
    assert hub['log_scalars']['train/loss'].mean() == pytest.approx(
        float(np.mean(hub['log_scalars']['train/loss'].data[0][-8:])))
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['dataset_meta'] == {'classes': ('a', 'b')}


def _official_layouts():
    sd = OrderedDict({'module.conv.weight': torch.randn(2, 2), 'module.bn.running_mean':
                      torch.zeros(2), 'module.bn.num_batches_tracked': torch.tensor(3)})
    opt = {'state': {0: {'momentum_buffer': torch.ones(2)}},
           'param_groups': [{'lr': 0.1, 'params': [0], 'nesterov': False}]}
    args = argparse.Namespace(model='elsa_swin_tiny', lr=1e-3, drop_path=0.1, amp=True,
                              input_size=[3, 224, 224], mean=(0.485, 0.456, 0.406), seed=None)
    return {
        # hszhao/SAN tool/train.py (spec A6)
        'san': {'epoch': 100, 'state_dict': sd, 'optimizer': opt,
                'scheduler': {'milestones': [30, 60], 'last_epoch': 99, '_last_lr': [0.1]},
                'top1_val': np.float64(0.77), 'top5_val': np.float32(0.93)},
        # LESA_classification save_model and LESA_detection (mmcv 1.x save_checkpoint)
        'lesa_cls': {'net': sd, 'optim': opt, 'epoch': 94},
        'lesa_det': {'meta': {'mmcv_version': '1.3.0', 'CLASSES': ('person', 'car'),
                              'epoch': 20, 'iter': 1000, 'config': 'x', 'env_info': 'y',
                              'hook_msgs': {'last_ckpt': 'epoch_20.pth'}},
                     'state_dict': sd, 'optimizer': opt},
        # ELSA classification (timm CheckpointSaver)
        'elsa': {'epoch': 299, 'arch': 'elsa_swin_tiny', 'state_dict': sd, 'optimizer': opt,
                 'args': args, 'amp_scaler': {'scale': 65536.0, 'growth_tracker': 0},
                 'version': 2, 'metric': 82.7, 'state_dict_ema': sd},
        # LocalViT (DeiT main.py)
        'localvit': {'model': sd, 'optimizer': opt, 'epoch': 299, 'model_ema': sd,
                     'lr_scheduler': {'base_lrs': [5e-4], 'last_epoch': 299},
                     'scaler': {'scale': 1024.0}, 'args': args},
    }


@pytest.mark.parametrize('release', ['san', 'lesa_cls', 'lesa_det', 'elsa', 'localvit'])
def test_official_release_layouts_load(release, tmp_path):
    obj = _official_layouts()[release]
    path = str(tmp_path / f'{release}.pth')
    torch.save(obj, path)
    got = load_checkpoint_file(path, map_location='cpu')
    assert set(got) == set(obj)
    if 'args' in obj:
        assert isinstance(got['args'], argparse.Namespace) and vars(got['args']) == vars(obj['args'])
    if 'top1_val' in obj:
        assert got['top1_val'] == obj['top1_val'] and got['top5_val'].dtype == np.float32
    ckpt = _load_checkpoint(path)  # the same through mmengine (Pretrained init, load_from)
    assert set(ckpt) == set(obj)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / 'served'
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_http_checkpoints_load_and_payloads_are_refused(http_root, tmp_path, toy_runner,
                                                        monkeypatch, make_payload):
    root, url = http_root
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # the download cache
    runner = toy_runner(tmp_path / 'w', max_epochs=1)
    runner.train()
    (root / 'epoch_1.pth').write_bytes((tmp_path / 'w' / 'epoch_1.pth').read_bytes())
    ckpt = CheckpointLoader.load_checkpoint(f'{url}/epoch_1.pth', map_location='cpu')
    assert ckpt['meta']['epoch'] == 1 and 'fc.weight' in ckpt['state_dict']
    marker = tmp_path / 'MARKER'
    make_payload(root / 'evil.pth', marker)
    _refused(lambda: CheckpointLoader.load_checkpoint(f'{url}/evil.pth'), marker)
    assert (tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'evil.pth').is_file()
