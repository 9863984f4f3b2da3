"""tools/*.py command lines on real configs, in process (no training)."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO_CFG = str(REPO / 'configs/det/demo/mask_rcnn_lesa_tiny_demo.py')


def test_test_py_maps_eval_onto_the_demo_config(tmp_path, load_script):
    test_py = load_script('tools/test.py')
    args = test_py.parse_args([DEMO_CFG, 'ckpt.pth', '--eval', 'segm', '--work-dir',
                               str(tmp_path), '--show-dir', str(tmp_path / 'vis')])
    cfg = test_py.build_cfg(args)
    assert cfg.test_evaluator.type == 'CocoMetric'
    assert cfg.test_evaluator.metric == ['segm']
    assert cfg.test_evaluator.ann_file.endswith('annotations/instances_val.json')
    assert cfg.load_from == 'ckpt.pth' and cfg.work_dir == str(tmp_path)
    assert cfg.default_hooks.visualization.draw is True
    with pytest.raises(ValueError, match=r"unknown metric 'mIoU' for a mmdet config"):
        test_py.build_cfg(test_py.parse_args([DEMO_CFG, 'ckpt.pth', '--eval', 'mIoU']))
    with pytest.raises(ValueError, match=r'--out must be a \.pkl file'):
        test_py.build_cfg(test_py.parse_args([DEMO_CFG, 'ckpt.pth', '--out', 'x.json']))


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only adaptation')
def test_train_py_cpu_launcher_resume_and_atomic_checkpoints(tmp_path, load_script):
    train_py = load_script('tools/train.py')
    args = train_py.parse_args([DEMO_CFG, '--launcher', 'pytorch', '--resume', 'auto',
                                '--cfg-options', 'train_cfg.max_epochs=3'])
    cfg = train_py.build_cfg(args)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.resume is False  # auto: nothing to resume from, start from scratch
    assert cfg.train_cfg.max_epochs == 3
    assert cfg.work_dir == './work_dirs/mask_rcnn_lesa_tiny_demo'
    assert cfg.default_hooks.checkpoint.type == 'lsa.AtomicCheckpointHook'
    assert cfg.default_hooks.checkpoint.interval == 1  # the demo keeps one every epoch
    with pytest.raises(FileNotFoundError, match=r'nothing to resume from in work dir '
                       r'.*empty.*--resume auto'):
        train_py.build_cfg(train_py.parse_args([DEMO_CFG, '--resume', '--work-dir',
                                                str(tmp_path / 'empty')]))
    with pytest.raises(ValueError, match='--amp needs a CUDA device'):
        train_py.build_cfg(train_py.parse_args([DEMO_CFG, '--amp']))


def test_get_flops_on_the_demo_detector(capsys, load_script):
    info = load_script('tools/analysis_tools/get_flops.py').main([DEMO_CFG, '--shape', '96', '128'])
    out = capsys.readouterr().out
    assert 'Input shape: (96, 128)' in out and 'Flops:' in out
    # same parameter count as the model itself
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(DEMO_CFG).model)
    assert info['params'] == sum(p.numel() for p in model.parameters())
    assert info['flops'] > 1e8


def test_get_flops_counts_detectors_on_a_fixed_proposal_budget(load_script):
    """Detectors are counted on ``test_cfg.rpn.max_per_img`` fixed proposals, not on what a
    random RPN proposes: each proposal adds one box-head pass (the mask head keeps its 100
    RoIs), and the parts add up to the total."""
    tool = load_script('tools/analysis_tools/get_flops.py')

    def roi_head_flops(num: int) -> int:
        info = tool.main([DEMO_CFG, '--shape', '96', '128', '--by-part',
                          '--cfg-options', f'model.test_cfg.rpn.max_per_img={num}'])
        assert sum(info['by_part'].values()) == info['flops']
        assert set(info['by_part']) == {'backbone', 'neck', 'rpn_head', 'roi_head'}
        return info['by_part']['roi_head']

    # the demo's Shared4Conv1FCBBoxHead on one 7x7 RoI: 4 convs 3x3 (64->32, 3x 32->32),
    # fc 32*49 -> 256, classifier 256 -> 3 + 1, class-wise regression 256 -> 3 * 4
    per_roi = 49 * 9 * (64 * 32 + 3 * 32 * 32) + 32 * 49 * 256 + 256 * 4 + 256 * 12
    r100, r200 = roi_head_flops(100), roi_head_flops(200)
    assert r200 - r100 == 100 * per_roi  # exact: no proposal depends on the random weights


def test_get_flops_runs_cascade_mask_heads_on_100_rois(load_script):
    """Cascade Mask R-CNN counts as mmdet 2.x's ``forward_dummy``: every stage's box head on
    every proposal, every stage's mask head on the first 100 (mmdet 3's ``forward`` would run
    the mask heads on all of them)."""
    from mmengine.registry import MODELS, init_default_scope

    from lsa.analysis import complexity_info
    tool = load_script('tools/analysis_tools/get_flops.py')
    init_default_scope('mmdet')

    def extractor(size: int) -> dict:
        return dict(type='SingleRoIExtractor', out_channels=8, featmap_strides=[4],
                    roi_layer=dict(type='RoIAlign', output_size=size, sampling_ratio=0))
    box = dict(type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16, num_classes=3,
               reg_class_agnostic=True)
    head = MODELS.build(dict(
        type='CascadeRoIHead', num_stages=2, stage_loss_weights=[1, 0.5],
        bbox_roi_extractor=extractor(7), bbox_head=[box, box], mask_roi_extractor=extractor(14),
        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=8, conv_out_channels=8,
                       num_classes=3))).eval()

    class Heads(torch.nn.Module):
        def __init__(self, num: int) -> None:
            super().__init__()
            self.roi_head, self.num = head, num

        def forward(self, feat):
            proposals = tool.fixed_proposals(self.num, 64, 64, feat.device)
            return tool.roi_heads_forward(self.roi_head, (feat,), proposals, [])

    def parts(num: int) -> dict:
        with torch.no_grad():
            return complexity_info(Heads(num), (torch.zeros(1, 8, 16, 16),))['by_part']

    p150, p300 = parts(150), parts(300)
    # per RoI and stage: box fc 8*49 -> 16, 16 -> 16, classifier 16 -> 4, regression 16 -> 4;
    # mask conv 3x3 8 -> 8 on 14x14, deconv 2x2 8 -> 8, logits 1x1 8 -> 3 on 28x28
    box_per_roi = 8 * 49 * 16 + 16 * 16 + 16 * 4 + 16 * 4
    mask_per_roi = 8 * 8 * 9 * 196 + 8 * 8 * 4 * 196 + 8 * 3 * 784
    assert p150['bbox_head'] == 2 * 150 * box_per_roi and p300['bbox_head'] == 2 * 300 * box_per_roi
    assert p150['mask_head'] == p300['mask_head'] == 2 * 100 * mask_per_roi
