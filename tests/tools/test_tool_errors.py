"""Every tool failure names its cause: the messages, and that nothing unsafe or silent happens."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from lsa.apis.checkpoint_coverage import PartialCheckpointError, check_checkpoint_coverage
from lsa.apis.preflight import (
    check_datasets,
    check_demo_env,
    check_process_count,
    check_schedule,
)
from lsa.apis.runner_config import use_atomic_checkpoints
from lsa.compat import apply
from lsa.datasets import make_coco_instances

apply()
REPO = Path(__file__).resolve().parents[2]
DEMO_CFG = str(REPO / 'configs/det/demo/mask_rcnn_lesa_tiny_demo.py')


def _exit_message(call) -> str:
    with pytest.raises(SystemExit) as info:
        call()
    return str(info.value.code)


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco_instances(str(root), num_train=1, num_val=1)
    return root


@pytest.fixture
def demo_env(demo_data, monkeypatch):
    monkeypatch.setenv('LSA_DEMO_COCO', f'{demo_data}/')
    return demo_data


# -- datasets ---------------------------------------------------------------------------------

def test_missing_dataset_names_the_path_and_the_docs(tmp_path, monkeypatch, load_script):
    monkeypatch.setenv('LSA_DEMO_COCO', f'{tmp_path}/no_such_coco/')
    msg = _exit_message(lambda: load_script('tools/train.py').main([DEMO_CFG, '--work-dir',
                                                              str(tmp_path / 'w')]))
    assert 'dataset not found' in msg and 'no_such_coco/annotations/instances_train.json' in msg
    assert 'docs/get_started.md#prepare-datasets' in msg and 'CocoDataset' in msg
    msg = _exit_message(lambda: load_script('tools/test.py').main([DEMO_CFG, 'x.pth']))
    assert 'no_such_coco/annotations/instances_val.json' in msg
    assert '## Prepare datasets' in (REPO / 'docs/get_started.md').read_text()


def test_dataset_check_looks_through_wrappers_and_evaluators(tmp_path):
    (tmp_path / 'ann.json').write_text('{}')
    cfg = dict(
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='CocoDataset', data_root=str(tmp_path), ann_file='ann.json',
            data_prefix=dict(img='train/')))),
        val_dataloader=dict(dataset=dict(type='CocoDataset', data_root=str(tmp_path),
                                         ann_file='ann.json')),
        val_evaluator=dict(type='CocoMetric', ann_file=str(tmp_path / 'val.json')))
    with pytest.raises(FileNotFoundError, match=r'train/ does not exist \(train_dataloader'
                       r'\.dataset\.dataset\.data_prefix\.img'):
        check_datasets(cfg, ['train'])
    with pytest.raises(FileNotFoundError, match=r'val\.json does not exist \(val_evaluator'):
        check_datasets(cfg, ['val'])


# -- schedule and demo knobs ------------------------------------------------------------------

def test_demo_settings_out_of_range(monkeypatch, load_script):
    train_py = load_script('tools/train.py')
    for bad in ('0', '-3', 'two'):
        monkeypatch.setenv('LSA_DEMO_EPOCHS', bad)
        with pytest.raises(ValueError, match=f"LSA_DEMO_EPOCHS must be an integer >= 1, got "
                           f"'?{bad}'?"):
            train_py.build_cfg(train_py.parse_args([DEMO_CFG]))
    monkeypatch.setenv('LSA_DEMO_EPOCHS', '1')
    cfg = Config.fromfile(DEMO_CFG)
    milestones = [m for s in cfg.param_scheduler if s.type == 'MultiStepLR'
                  for m in s.milestones]
    if milestones:  # one epoch leaves no room for an LR step inside training
        with pytest.raises(ValueError, match=r'milestone \d+ is outside .*LSA_DEMO_EPOCHS=1'):
            train_py.build_cfg(train_py.parse_args([DEMO_CFG]))
    monkeypatch.setenv('LSA_DEMO_NUM_VAL', '0')
    with pytest.raises(ValueError, match='LSA_DEMO_NUM_VAL must be an integer >= 1, got 0'):
        check_demo_env()
    check_demo_env({'LSA_DEMO_EPOCHS': '4', 'LSA_DEMO_SEED': '0'})


def test_demo_data_counts_out_of_range(capsys, load_script):
    make_data = load_script('tools/misc/make_demo_data.py')
    for flag, value in (('--num-train', '0'), ('--num-val', '-2'), ('--seed', '-1')):
        with pytest.raises(SystemExit):
            make_data.parse_args(['coco', 'out', flag, value])
        assert f'{flag}: expected an integer >= ' in capsys.readouterr().err
    assert make_data.parse_args(['coco', 'out', '--num-train', '3']).num_train == 3


def test_schedule_checks():
    sched = [dict(type='MultiStepLR', begin=0, end=12, milestones=[8, 11])]
    check_schedule(dict(train_cfg=dict(max_epochs=12), param_scheduler=sched))
    with pytest.raises(ValueError, match=r'milestone 0 is outside \[1, 12\).*before the first'):
        check_schedule(dict(param_scheduler=[dict(sched[0], milestones=[0])]))
    with pytest.raises(ValueError, match=r'milestone 12 is outside .*after training ends'):
        check_schedule(dict(param_scheduler=[dict(sched[0], milestones=[12])]))
    with pytest.raises(ValueError, match=r'train_cfg\.max_iters must be an integer >= 1'):
        check_schedule(dict(train_cfg=dict(max_iters=0)))
    with pytest.raises(ValueError, match=r'checkpoint\.interval must be >= 1'):
        check_schedule(dict(default_hooks=dict(checkpoint=dict(interval=0))))


def _shipped_configs():
    return sorted(str(p) for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


@pytest.mark.parametrize('path', _shipped_configs(), ids=lambda p: Path(p).stem)
def test_every_shipped_config_checkpoints_often_and_atomically(path):
    cfg = Config.fromfile(path)
    check_schedule(cfg)
    assert use_atomic_checkpoints(cfg), 'the tools would not write its checkpoints atomically'
    hook = cfg.default_hooks.checkpoint
    if hook.get('by_epoch', True) and cfg.train_cfg.get('by_epoch', True) \
            and 'max_iters' not in cfg.train_cfg:
        assert hook.interval == 1, 'a kill would lose more than one epoch'
    else:
        assert hook.interval <= 16000, 'a kill would lose more than 16k iterations'


# -- process count ----------------------------------------------------------------------------

def test_process_count_messages():
    assert 'running 2 CPU processes with gloo' in check_process_count('2', 0, 2)
    with pytest.raises(ValueError, match='asked for 8 GPUs but this machine has no CUDA GPU.*'
                       '2 CPU cores'):
        check_process_count('8', 0, 2)
    with pytest.raises(ValueError, match='asked for 8 GPUs but this machine has 4 CUDA GPUs'):
        check_process_count('8', 4, 64)
    for bad in ('0', 'x'):
        with pytest.raises(ValueError, match='GPUS must be a positive integer'):
            check_process_count(bad, 1, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason='asks for more GPUs than a CPU box has')
def test_dist_train_says_it_once_before_any_process_starts(tmp_path):
    cores = len(os.sched_getaffinity(0))
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(['bash', str(REPO / 'tools/dist_train.sh'), DEMO_CFG, str(cores + 1),
                           '--work-dir', str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.count(f'asked for {cores + 1} GPUs') == 1, out
    assert 'torch.distributed' not in out and not list(tmp_path.iterdir()), out


# -- checkpoints given to the tools -----------------------------------------------------------

def test_untrusted_checkpoint_refused_by_test_train_and_demo(demo_env, payload, tmp_path,
                                                             load_script):
    path, marker = payload
    msg = _exit_message(lambda: load_script('tools/test.py').main(
        [DEMO_CFG, path, '--work-dir', str(tmp_path / 't')]))
    assert 'refusing to load' in msg and 'io.open' in msg and '--trust-checkpoint' in msg
    msg = _exit_message(lambda: load_script('tools/train.py').main(
        [DEMO_CFG, '--resume', path, '--work-dir', str(tmp_path / 'w')]))
    assert 'refusing to load' in msg
    img = str(demo_env / 'val' / '000000.jpg')
    msg = _exit_message(lambda: load_script('demo/image_demo.py').main(
        [img, DEMO_CFG, path, '--out-file', str(tmp_path / 'o.png'), '--device', 'cpu']))
    assert 'refusing to load' in msg
    assert not marker.exists()
    # the explicit opt-in: the file is unpickled (payload runs), then its weights are checked
    msg = _exit_message(lambda: load_script('tools/test.py').main(
        [DEMO_CFG, path, '--work-dir', str(tmp_path / 't'), '--trust-checkpoint']))
    assert marker.exists() and 'evil.pth leaves' in msg


def test_wrong_checkpoint_is_refused_not_silently_tested(demo_env, tmp_path, load_script):
    wrong = str(tmp_path / 'san_classifier.pth')
    torch.save({'state_dict': {'backbone.conv_in.weight': torch.zeros(64, 3, 1, 1),
                               'head.fc.weight': torch.zeros(10, 2048)}}, wrong)
    msg = _exit_message(lambda: load_script('tools/test.py').main(
        [DEMO_CFG, wrong, '--work-dir', str(tmp_path / 't'), '--eval', 'bbox']))
    assert 'san_classifier.pth leaves' in msg and '(100% of its parameters) unloaded' in msg
    assert 'backbone.' in msg and 'roi_head.' in msg and '--allow-partial' in msg
    text = tmp_path / 'notes.txt'
    text.write_text('not a checkpoint')
    msg = _exit_message(lambda: load_script('tools/test.py').main([DEMO_CFG, str(text)]))
    assert 'notes.txt is not a PyTorch checkpoint' in msg


def test_coverage_counts_and_allow_partial():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    full = {'state_dict': {'module.' + k: v for k, v in model.state_dict().items()}}
    assert check_checkpoint_coverage(model, full, 'f') == []
    partial = {'0.weight': torch.zeros(3, 2), '0.bias': torch.zeros(4)}  # bias: wrong shape
    with pytest.raises(PartialCheckpointError,
                       match=r"f leaves 5 of the model's 6 weight tensors \(60% of its "
                       r'parameters\) unloaded, under 1\.\* \(4\), 0\.\* \(1\)\. It was'):
        check_checkpoint_coverage(model, partial, 'f')
    assert len(check_checkpoint_coverage(model, partial, 'f', allow_partial=True)) == 5


# -- converters -------------------------------------------------------------------------------

def _san_released(tmp_path, drop=None):
    sys.path.insert(0, str(REPO / 'tests' / 'converters'))
    try:
        from test_san_converter import released_checkpoint
    finally:
        sys.path.pop(0)
    ckpt = released_checkpoint('san10', 'patchwise')
    if drop:
        del ckpt['state_dict'][drop]
    path = tmp_path / ('san_incomplete.pth' if drop else 'san.pth')
    torch.save(ckpt, str(path))
    return str(path)


def test_converter_errors_name_the_cause(tmp_path, payload, load_script):
    lesa2lsa = load_script('tools/model_converters/lesa2lsa.py')
    san2lsa = load_script('tools/model_converters/san2lsa.py')
    san = _san_released(tmp_path)
    msg = _exit_message(lambda: lesa2lsa.main([san, str(tmp_path / 'o.pth')]))
    assert 'is a SAN checkpoint, not a LESA one; use tools/model_converters/san2lsa.py' in msg
    lost = 'module.layer3.3.sam.conv1.weight'
    msg = _exit_message(lambda: san2lsa.main([_san_released(tmp_path, lost),
                                              str(tmp_path / 'o.pth')]))
    assert f'these keys are missing (present in every sibling block): {lost}' in msg
    before = Path(san).read_bytes()
    msg = _exit_message(lambda: san2lsa.main([san, san]))
    assert 'refusing to overwrite the source' in msg and Path(san).read_bytes() == before
    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    msg = _exit_message(lambda: san2lsa.main([str(text), str(tmp_path / 'o.pth')]))
    assert 'is not a PyTorch checkpoint' in msg
    path, marker = payload
    msg = _exit_message(lambda: san2lsa.main([path, str(tmp_path / 'o.pth')]))
    assert 'refusing to load' in msg and not marker.exists()
    san2lsa.main([san, str(tmp_path / 'ok.pth')])  # the released layout converts
    assert (tmp_path / 'ok.pth').is_file()
