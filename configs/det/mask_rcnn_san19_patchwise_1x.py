# Mask R-CNN + FPN with a SAN19-patchwise backbone, 1x schedule, COCO. Beyond the SAN paper
# (which reports ImageNet only): no published detection numbers exist for this config.
# Recipe: the standard mmdet ResNet-50 Mask R-CNN 1x (SGD lr 0.02, momentum 0.9, wd 1e-4,
# 500-iteration warm-up, x0.1 at epochs 8 and 11, single-scale 1333x800, 8 GPUs x 2 images)
# with the ResNet conventions carried over: the stem and the first two SAN stages
# (strides 2 and 4) frozen, BatchNorm statistics frozen (norm_eval).
# SAN stages 1-4 (strides 4, 8, 16, 32; 256/512/1024/2048 channels) feed the FPN.
# Backbone weights: the official ImageNet SAN19-patchwise checkpoint converted with
#   python tools/model_converters/san2lsa.py san19_patchwise.pth checkpoints/san19_patchwise_in1k.pth
# (see docs/model_zoo.md).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmdet'

checkpoint = 'checkpoints/san19_patchwise_in1k.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='lsa.SAN',
        arch='san19',
        sa_type='patchwise',
        out_indices=(1, 2, 3, 4),
        frozen_stages=2,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
