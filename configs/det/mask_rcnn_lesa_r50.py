# Mask R-CNN + FPN with a LESA-ResNet-50 backbone (DCN in c3-c5), 20 epochs, COCO (LESA paper).
# Official recipe (Chenglin-Yang/LESA_detection configs/lesa/lesa_mask_rcnn_r50_dconv_c3-c5_8x1_20e.py):
# - backbone: ResNet-50 v1.5, strides (1, 2, 2, 2); LESA (groups 8, 2-D query-only relative
#   position, checkpointed local/context terms) in place of the 3x3 conv of c4 blocks 1-5 and all
#   c5 blocks; deformable convs (DCNv1, 1 offset group) in c3-c5 (the LESA local branch included);
#   stem + c2 frozen, BatchNorm statistics frozen;
# - every image resized to a fixed 1024x1024 square, ignoring its aspect ratio (train and test),
#   random flip; the position tables are sized for that input (stage_spatial_res 256/128/64/32);
# - SGD lr 0.01, momentum 0.9, wd 1e-4, 500-iteration linear warm-up, x0.1 at epochs 16 and 19,
#   20 epochs, 8 GPUs x 1 image, fp32.
# Usage: tools/dist_train.sh configs/det/mask_rcnn_lesa_r50.py 8
# Backbone weights: the official LESA-ResNet-50 ImageNet checkpoint made for detection
# (LESA_detection README, "lesa_resnet50_pretrained"), converted with
#   python tools/model_converters/lesa2lsa.py checkpoint.pth checkpoints/lesa_r50_in1k_det.pth
# (see docs/model_zoo.md). As upstream, its position tables are not transferred.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_20e.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/models/lesa_dcn.py',
    './_base_/datasets/lesa_square_pipelines.py',
]

checkpoint = 'checkpoints/lesa_r50_in1k_det.pth'  # noqa
model = dict(
    backbone=dict(
        _base_._lesa_dcn, _delete_=True, arch='r50', stage_spatial_res=(256, 128, 64, 32),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=_base_._lesa_channels))

image_size = (1024, 1024)
_resize = dict(_base_._square_resize, scale=image_size)
train_pipeline = [_base_._load_image, _base_._load_masks, _resize, *_base_._flip_and_pack]
test_pipeline = [_base_._load_image, _resize, *_base_._test_tail]

# 8 GPUs x 1 image
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
