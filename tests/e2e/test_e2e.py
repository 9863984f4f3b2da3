"""End to end through tools/: generate data, train, checkpoint, resume, test with --eval.

Every task runs its real config (configs/{cls,det,seg}) shrunk by a tiny config in
tests/e2e/configs/ on generated data through ``main(argv)`` of tools/train.py and
tools/test.py, the functions the commands run (in this process: an interpreter start-up with
the toolboxes costs several seconds per command): one per toolbox trains, resumes and tests;
HTC and Cascade train and test. The commands themselves, in fresh processes as a user types
them, run in a 2-process CPU (gloo) run through tools/dist_train.sh / dist_test.sh and in a
shortened demo/run_demo.sh (train.py, test.py, the drawing script: every stage and output,
not how well it learns).
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lsa.datasets import make_ade20k, make_cls_folder, make_coco_instances

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'tests' / 'e2e' / 'configs'


@pytest.fixture(scope='module')
def data_env(tmp_path_factory) -> dict:
    """Generate the three datasets once; the env the tiny configs read their paths from."""
    root = tmp_path_factory.mktemp('e2e_data')
    make_coco_instances(str(root / 'coco'), num_train=4, num_val=2)
    ade = make_ade20k(str(root / 'ade'), num_train=4, num_val=2)
    make_cls_folder(str(root / 'cls'), num_train=2, num_val=2, size=(64, 64))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               LSA_DEMO_COCO=f'{root / "coco"}/', LSA_E2E_ADE=ade['data_root'],
               LSA_E2E_CLS=str(root / 'cls'))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    return env


def run(args: list[str], env: dict, timeout: int = 600) -> str:
    """Run a command from the repo root; fail with the output tail if it fails."""
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, args))} exited {proc.returncode}:\n{out[-6000:]}')
    return out


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def test_metrics(work_dir: Path) -> dict:
    """The metrics mmengine's LoggerHook dumped for the test run in ``work_dir``."""
    files = sorted(glob.glob(str(work_dir / '*' / '*.json')))
    assert files, f'no metrics json in {work_dir}'
    with open(files[-1]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


test_metrics.__test__ = False  # a helper, not a test

# config, checkpoint unit ('epoch' or 'iter'), length of the first run (epochs or iters),
# iterations it takes (cls: 3 classes x 2 images / batch 4; det: 4 images / batch 2),
# --eval, expected metric keys. One task per toolbox trains, resumes and tests; the other
# detectors (whose full-size forward tests/configs runs) train one epoch and test.
TASKS = {
    'cls_san': ('san10_tiny_cls.py', 'epoch', 1, 2, ['accuracy'], ['accuracy/top1']),
    'mask_rcnn_lesa': ('mask_rcnn_lesa_tiny.py', 'epoch', 1, 2, ['bbox', 'segm'],
                       ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP']),
    'upernet_elsa_swin': ('upernet_elsa_swin_tiny.py', 'iter', 2, 2, ['mIoU'],
                          ['mIoU', 'aAcc', 'mAcc']),
}
TRAIN_TEST_ONLY = {
    'htc_lesa': ('htc_lesa_tiny.py', ['bbox', 'segm'], ['coco/bbox_mAP', 'coco/segm_mAP']),
    'cascade_elsa_swin': ('cascade_mask_rcnn_elsa_swin_tiny.py', ['bbox', 'segm'],
                          ['coco/bbox_mAP', 'coco/segm_mAP']),
}


@pytest.fixture
def tools_env(data_env, monkeypatch):
    """The data locations the tiny configs read, in this process's environment."""
    for key in ('LSA_DEMO_COCO', 'LSA_E2E_ADE', 'LSA_E2E_CLS'):
        monkeypatch.setenv(key, data_env[key])


def check_test_run(test_main, cfg: str, ckpt: Path, test_dir: Path, metrics: list[str],
                   keys: list[str], bounds: tuple[float, float]) -> None:
    """tools/test.py with the OpenMMLab 2.x --eval spelling returns and logs every metric."""
    result = test_main([cfg, str(ckpt), '--work-dir', str(test_dir), '--eval', *metrics])
    dumped = test_metrics(test_dir)  # what the logger wrote for this run
    for key in keys:
        assert bounds[0] <= result[key] <= bounds[1], (key, result)
        assert dumped[key] == pytest.approx(result[key]), (key, dumped, result)


@pytest.mark.parametrize('task', list(TASKS))
def test_train_resume_test(task, tools_env, tmp_path, capfd, load_script):
    cfg_name, unit, first, iters1, metrics, keys = TASKS[task]
    cfg = str(CONFIGS / cfg_name)
    work_dir = tmp_path / 'work'
    length_key = 'train_cfg.max_epochs' if unit == 'epoch' else 'train_cfg.max_iters'
    train = load_script('tools/train.py').main

    # 1. train and checkpoint
    train([cfg, '--work-dir', str(work_dir)])
    ckpt1 = load_ckpt(work_dir / f'{unit}_{first}.pth')
    assert ckpt1['meta']['iter'] == iters1
    assert {'state_dict', 'optimizer', 'message_hub'} <= set(ckpt1)

    # 2. resume from the latest checkpoint and train as long again: the count continues
    capfd.readouterr()
    train([cfg, '--work-dir', str(work_dir), '--resume',
           '--cfg-options', f'{length_key}={2 * first}'])
    out = ''.join(capfd.readouterr())
    assert re.search(rf'resumed epoch: {ckpt1["meta"]["epoch"]}, iter: {iters1}', out), out[-3000:]
    ckpt2 = load_ckpt(work_dir / f'{unit}_{2 * first}.pth')
    assert ckpt2['meta']['iter'] == 2 * iters1
    if unit == 'epoch':
        assert ckpt2['meta']['epoch'] == 2
    # nothing lost: the loss history of the first run was carried into the resumed one
    losses = ckpt2['message_hub']['log_scalars']['train/loss'].data[0]
    assert len(losses) == 2 * iters1
    first_losses = ckpt1['message_hub']['log_scalars']['train/loss'].data[0]
    assert losses[:iters1].tolist() == first_losses.tolist()
    # and the weights moved on from the resumed ones
    moved = [k for k, v in ckpt2['state_dict'].items()
             if v.is_floating_point() and not torch.equal(v, ckpt1['state_dict'][k])]
    assert moved

    # 3. test
    bounds = (0.0, 100.0) if task in ('cls_san', 'upernet_elsa_swin') else (-1.0, 1.0)
    check_test_run(load_script('tools/test.py').main, cfg, work_dir / f'{unit}_{2 * first}.pth',
                   tmp_path / 'test', metrics, keys, bounds)


@pytest.mark.parametrize('task', list(TRAIN_TEST_ONLY))
def test_train_test(task, tools_env, tmp_path, load_script):
    cfg_name, metrics, keys = TRAIN_TEST_ONLY[task]
    cfg = str(CONFIGS / cfg_name)
    work_dir = tmp_path / 'work'
    load_script('tools/train.py').main([cfg, '--work-dir', str(work_dir)])
    ckpt = load_ckpt(work_dir / 'epoch_1.pth')
    assert ckpt['meta']['iter'] == 2  # 4 images / batch 2
    check_test_run(load_script('tools/test.py').main, cfg, work_dir / 'epoch_1.pth',
                   tmp_path / 'test', metrics, keys, (-1.0, 1.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_and_test_two_cpu_processes(data_env, tmp_path):
    cfg = str(CONFIGS / 'san10_tiny_cls.py')
    env = dict(data_env, PYTHON=sys.executable, PORT=str(_free_port()))
    out = run(['bash', str(REPO / 'tools' / 'dist_train.sh'), cfg, '2', '--work-dir',
               str(tmp_path / 'work')], env)
    assert 'Distributed training: True' in out and re.search(r'GPU number: 2', out)
    ckpt = load_ckpt(tmp_path / 'work' / 'epoch_1.pth')
    # 3 classes x 2 images = 6 images over 2 ranks with batch 4 each: 1 iteration per epoch
    assert ckpt['meta']['iter'] == 1
    env['PORT'] = str(_free_port())
    run(['bash', str(REPO / 'tools' / 'dist_test.sh'), cfg, str(tmp_path / 'work' / 'epoch_1.pth'),
         '2', '--work-dir', str(tmp_path / 'test'), '--eval', 'accuracy'], env)
    assert 0.0 <= test_metrics(tmp_path / 'test')['accuracy/top1'] <= 100.0


def _logged_losses(work_dir: Path) -> list[float]:
    """The total training loss of every logged iteration of the run in ``work_dir``."""
    (scalars, ) = glob.glob(str(work_dir / '2*' / 'vis_data' / 'scalars.json'))
    with open(scalars) as f:
        return [rec['loss'] for rec in map(json.loads, f) if 'loss' in rec]


def test_shortened_demo_runs_end_to_end(tmp_path):
    """README command 1, shortened to 4 iterations (2 epochs of 8 images): every stage runs and
    writes its outputs.

    It checks the plumbing, not how well the model learns: in a few iterations the loss
    mostly recalibrates the fresh heads, too chaotic for a margin of five spreads. What the full
    demo reaches, and its spread, is measured by tools/misc/demo_spread.py and documented in
    docs/train_test.md#the-demo.
    """
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               LSA_DEMO_DATA=str(tmp_path / 'data'), LSA_DEMO_WORK_DIR=str(work),
               LSA_DEMO_EPOCHS='2', LSA_DEMO_NUM_TRAIN='8', LSA_DEMO_NUM_VAL='4')
    out = run(['bash', str(REPO / 'demo' / 'run_demo.sh'), '--cfg-options',
               'default_hooks.logger.interval=1', 'log_processor.window_size=1'], env,
              timeout=900)
    # a checkpoint every epoch (the last one kept), the test metrics, the table, the picture
    assert (work / 'epoch_2.pth').is_file() and not (work / 'epoch_1.pth').exists()
    result = test_metrics(work / 'test')
    for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
        assert 0.0 <= result[f'coco/{key}'] <= 1.0, result
        assert re.search(rf'\|\s*{key}\s*\|\s*{result[f"coco/{key}"]:.3f}\s*\|', out), out[-3000:]
    assert (work / 'demo_predictions.png').stat().st_size > 10_000
    losses = _logged_losses(work)
    assert len(losses) == 4, losses  # 8 images / batch 4 x 2 epochs, every one logged
    assert all(math.isfinite(v) for v in losses), losses
