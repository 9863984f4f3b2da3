# Mask R-CNN + FPN with a LocalViT-PVT (PVT-Tiny with locality feed-forward) backbone, 1x
# schedule, COCO. Beyond the LocalViT paper (ImageNet only): no published detection numbers.
# Recipe: PVT's own Mask R-CNN 1x recipe (PVT paper / mmdet configs/pvt): AdamW lr 1e-4,
# wd 1e-4, 500-iteration warm-up, x0.1 at epochs 8 and 11, single-scale 1333x800, 8 GPUs x 2
# images, drop path 0.1. The four stage outputs (strides 4-32, 64/128/320/512 channels) feed the
# FPN; position embeddings are resized to the input. The locality feed-forward holds
# BatchNorms; with 2 images per GPU their ImageNet statistics are kept (norm_eval=True).
# Backbone and its weights: configs/_base_/models/localvit_pvt_t.py.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/models/localvit_pvt_t.py',
]

model = dict(backbone=dict(_base_._localvit_pvt_t, _delete_=True),
             neck=dict(in_channels=_base_._localvit_pvt_t_channels))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
