"""The --eval mapping, CPU-distributed adaptation and other config edits of tools/train|test.py."""
import pytest
from mmengine.config import Config

from lsa.apis.runner_config import (
    adapt_for_cpu_distributed,
    apply_eval_metrics,
    apply_resume,
    enable_amp,
    enable_visualization,
    normalize_eval_metrics,
    resolve_work_dir,
    toolbox_of,
)


def _det_cfg(**extra):
    return Config(dict(default_scope='mmdet', model=dict(type='MaskRCNN'),
                       test_evaluator=dict(type='CocoMetric', ann_file='a.json',
                                           metric=['bbox'], format_only=False), **extra))


def test_det_bbox_segm_sets_coco_metric_list():
    cfg = apply_eval_metrics(_det_cfg(), ['bbox', 'segm'])
    assert cfg.test_evaluator.metric == ['bbox', 'segm']
    assert cfg.test_evaluator.ann_file == 'a.json'  # the rest of the evaluator is kept
    assert cfg.test_evaluator.type == 'CocoMetric'


def test_det_names_are_case_insensitive_and_deduplicated():
    cfg = apply_eval_metrics(_det_cfg(), ['BBOX', 'bbox', 'Segm'])
    assert cfg.test_evaluator.metric == ['bbox', 'segm']


def test_det_scoped_type_in_a_list_of_evaluators():
    cfg = _det_cfg()
    cfg.test_evaluator = [dict(type='mmdet.CocoMetric', metric='bbox'),
                          dict(type='DumpResults', out_file_path='x.pkl')]
    apply_eval_metrics(cfg, ['segm'])
    assert cfg.test_evaluator[0].metric == ['segm']
    assert cfg.test_evaluator[1] == dict(type='DumpResults', out_file_path='x.pkl')


def test_unknown_metric_names_it_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'mAP'.*bbox, segm, proposal"):
        apply_eval_metrics(_det_cfg(), ['bbox', 'mAP'])
    seg = Config(dict(default_scope='mmseg', test_evaluator=dict(type='IoUMetric')))
    with pytest.raises(ValueError, match=r"'bbox' for a mmseg config; allowed: mIoU, mDice"):
        apply_eval_metrics(seg, ['bbox'])


def test_missing_evaluator_type_is_an_error():
    cfg = _det_cfg()
    cfg.test_evaluator = dict(type='VOCMetric')
    with pytest.raises(ValueError, match=r"no CocoMetric.*\['VOCMetric'\]"):
        apply_eval_metrics(cfg, ['bbox'])


def test_empty_metric_list_is_an_error():
    with pytest.raises(ValueError, match='at least one metric'):
        normalize_eval_metrics('mmdet', [])


def test_seg_miou_and_mdice():
    cfg = Config(dict(default_scope='mmseg',
                      test_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU'])))
    apply_eval_metrics(cfg, ['miou', 'mDice'])
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice'])


def test_cls_accuracy_keeps_the_configs_topk():
    cfg = Config(dict(default_scope='mmpretrain',
                      test_evaluator=dict(type='Accuracy', topk=(1, 5))))
    apply_eval_metrics(cfg, ['accuracy'])
    assert cfg.test_evaluator == dict(type='Accuracy', topk=(1, 5))


def test_cls_precision_recall_adds_single_label_metric():
    cfg = Config(dict(default_scope='mmpretrain',
                      test_evaluator=dict(type='Accuracy', topk=(1, 5))))
    apply_eval_metrics(cfg, ['accuracy', 'precision', 'f1_score'])
    assert cfg.test_evaluator == [dict(type='Accuracy', topk=(1, 5)),
                                  dict(type='SingleLabelMetric', items=['precision', 'f1-score'])]
    cfg = Config(dict(default_scope='mmpretrain', test_evaluator=dict(type='Accuracy')))
    apply_eval_metrics(cfg, ['recall'])
    assert cfg.test_evaluator == dict(type='SingleLabelMetric', items=['recall'])


def test_cls_accuracy_without_an_accuracy_evaluator_uses_top1():
    cfg = Config(dict(default_scope='mmpretrain',
                      test_evaluator=dict(type='SingleLabelMetric')))
    apply_eval_metrics(cfg, ['accuracy'])
    assert cfg.test_evaluator == dict(type='Accuracy', topk=(1,))


def test_toolbox_from_default_scope():
    assert toolbox_of(_det_cfg()) == 'mmdet'
    with pytest.raises(ValueError, match=r"default_scope must be one of .* got 'mmocr'"):
        toolbox_of(Config(dict(default_scope='mmocr')))
    with pytest.raises(ValueError, match='got None'):
        toolbox_of(Config(dict()))


def test_cpu_distributed_switches_to_gloo_and_plain_ddp():
    cfg = _det_cfg(env_cfg=dict(dist_cfg=dict(backend='nccl')),
                   model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                          find_unused_parameters=True))
    cfg.model = dict(type='MaskRCNN', backbone=dict(norm_cfg=dict(type='SyncBN')),
                     heads=[dict(norm_cfg=dict(type='SyncBN', requires_grad=True))])
    assert adapt_for_cpu_distributed(cfg, 'pytorch', cuda_available=False)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         find_unused_parameters=True, broadcast_buffers=False)
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.heads[0].norm_cfg == dict(type='BN', requires_grad=True)


@pytest.mark.parametrize('launcher, cuda', [('none', False), ('pytorch', True)])
def test_cpu_distributed_leaves_other_cases_alone(launcher, cuda):
    cfg = _det_cfg(env_cfg=dict(dist_cfg=dict(backend='nccl')))
    before = cfg.to_dict()
    assert not adapt_for_cpu_distributed(cfg, launcher, cuda_available=cuda)
    assert cfg.to_dict() == before


def test_amp_needs_cuda_and_wraps_the_optimizer():
    cfg = _det_cfg(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)))
    with pytest.raises(ValueError, match='--amp needs a CUDA device'):
        enable_amp(cfg, cuda_available=False)
    enable_amp(cfg, cuda_available=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer.lr == 0.1


def test_resume_latest_auto_and_explicit(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    # nothing to resume from: a bare --resume fails naming the work dir, 'auto' starts fresh
    with pytest.raises(FileNotFoundError, match=r"nothing to resume from in work dir .*work.*"
                       r"--resume auto"):
        apply_resume(_det_cfg(work_dir=str(work)), 'latest')
    cfg = apply_resume(_det_cfg(work_dir=str(work), load_from='pre.pth'), 'auto')
    assert cfg.resume is False and cfg.load_from == 'pre.pth'
    # last_checkpoint naming a missing file is named
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    with pytest.raises(FileNotFoundError, match=r'names .*epoch_2\.pth, which does not exist'):
        apply_resume(_det_cfg(work_dir=str(work)), 'auto')
    (work / 'epoch_2.pth').write_bytes(b'x')
    for mode in ('latest', 'auto'):
        cfg = apply_resume(_det_cfg(work_dir=str(work)), mode)
        assert cfg.resume is True and cfg.load_from == str(work / 'epoch_2.pth')
    cfg = apply_resume(_det_cfg(work_dir=str(work)), str(work / 'epoch_2.pth'))
    assert cfg.resume is True and cfg.load_from == str(work / 'epoch_2.pth')
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'work/epoch_9\.pth' does not exist"):
        apply_resume(_det_cfg(work_dir=str(work)), 'work/epoch_9.pth')
    cfg = apply_resume(_det_cfg(resume=False), None)
    assert cfg.resume is False


def test_work_dir_priority():
    cfg = _det_cfg()
    assert resolve_work_dir(cfg, None, 'configs/det/x_y.py') == './work_dirs/x_y'
    cfg = _det_cfg(work_dir='from_cfg')
    assert resolve_work_dir(cfg, None, 'configs/det/x_y.py') == 'from_cfg'
    assert resolve_work_dir(cfg, 'cli', 'configs/det/x_y.py') == 'cli'


def test_show_dir_turns_on_the_det_hook(tmp_path):
    cfg = _det_cfg(default_hooks=dict(visualization=dict(type='DetVisualizationHook')))
    enable_visualization(cfg, str(tmp_path))
    hook = cfg.default_hooks.visualization
    assert hook.draw is True and hook.test_out_dir == str(tmp_path)
    with pytest.raises(ValueError, match='default_hooks.visualization'):
        enable_visualization(_det_cfg(default_hooks=dict()), str(tmp_path))
