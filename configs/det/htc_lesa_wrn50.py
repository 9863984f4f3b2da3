# HTC (Hybrid Task Cascade, with the semantic branch) + FPN with a LESA-WRN-50 backbone (DCN in
# c3-c5), 1280x1280, 20 epochs, COCO (LESA paper).
# Official recipe (Chenglin-Yang/LESA_detection
# configs/lesa/lesa_htc_wrn50_fpn_dconv_c3-c5_4x1_20e_coco_1280.py, on mmdet's HTC R-50 config):
# - backbone: WRN-50-2 (bottleneck width 2x), otherwise as mask_rcnn_lesa_r50.py, position
#   tables sized for 1280x1280 (stage_spatial_res 320/160/80/40);
# - every image resized to a fixed 1280x1280 square ignoring its aspect ratio (train and test),
#   random flip; semantic labels from COCO-stuff (stuffthingmaps, 183 classes, loss weight 0.2,
#   predicted at 1/8);
# - SGD lr 0.005, momentum 0.9, wd 1e-4, 500-iteration linear warm-up, x0.1 at epochs 16 and 19,
#   20 epochs, 4 GPUs x 1 image, fp32.
# Usage: tools/dist_train.sh configs/det/htc_lesa_wrn50.py 4
# Backbone weights: the official LESA-WRN-50 ImageNet checkpoint made for detection
# (LESA_detection README, "lesa_wrn50_pretrained"), converted with
#   python tools/model_converters/lesa2lsa.py checkpoint.pth checkpoints/lesa_wrn50_in1k_det.pth
# (see docs/model_zoo.md). As upstream, its position tables are not transferred.
_base_ = [
    'mmdet::htc/htc_r50_fpn_20e_coco.py',
    './_base_/models/lesa_dcn.py',
    './_base_/datasets/lesa_square_pipelines.py',
]

checkpoint = 'checkpoints/lesa_wrn50_in1k_det.pth'  # noqa
model = dict(
    backbone=dict(
        _base_._lesa_dcn, _delete_=True, arch='wrn50', stage_spatial_res=(320, 160, 80, 40),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=_base_._lesa_channels))

image_size = (1280, 1280)
_resize = dict(_base_._square_resize, scale=image_size)
train_pipeline = [_base_._load_image, dict(_base_._load_masks, with_seg=True),  # + COCO-stuff
                  _resize, *_base_._flip_and_pack]
test_pipeline = [_base_._load_image, _resize, *_base_._test_tail]

# 4 GPUs x 1 image
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.005))
auto_scale_lr = dict(base_batch_size=4)
