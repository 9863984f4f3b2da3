# Mask R-CNN + FPN with a LocalViT-PVT (PVT-Tiny with locality feed-forward) backbone, 1x
# schedule, COCO. Beyond the LocalViT paper (ImageNet only): no published detection numbers.
# Recipe: PVT's own Mask R-CNN 1x recipe (PVT paper / mmdet configs/pvt): AdamW lr 1e-4,
# wd 1e-4, 500-iteration warm-up, x0.1 at epochs 8 and 11, single-scale 1333x800, 8 GPUs x 2
# images, drop path 0.1. The four stage outputs (strides 4-32, 64/128/320/512 channels) feed the
# FPN; position embeddings are resized to the input. The locality feed-forward holds
# BatchNorms; with 2 images per GPU their ImageNet statistics are kept (norm_eval=True).
# Backbone weights: the official localvit_pvt.pth (LocalViT release v1.0.0) converted with
#   python tools/model_converters/localvit2lsa.py localvit_pvt.pth checkpoints/localvit_pvt_in1k.pth
# (see docs/model_zoo.md).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmdet'

checkpoint = 'checkpoints/localvit_pvt_in1k.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='lsa.LocalViTPVT',
        arch='tiny',
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
