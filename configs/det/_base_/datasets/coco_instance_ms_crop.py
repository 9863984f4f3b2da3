# COCO instance segmentation with the Swin/ELSA multi-scale + crop training augmentation
# (DETR / Sparse R-CNN style): flip, then one of two policies chosen at random per image:
#   (a) shorter side in {480, 512, ..., 800} (step 32), longer side <= 1333, keep ratio;
#   (b) shorter side in {400, 500, 600} -> random crop of an absolute size in [384, 600]
#       -> shorter side in {480, ..., 800} as in (a).
# ELSA-Swin's official det configs use it for BOTH the 1x and the 3x schedules
# (damo-cv/ELSA det/configs/elsa_swin/*.py). Test: single scale (1333, 800), from the base.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

_short_sides = list(range(480, 801, 32))  # 480, 512, ..., 800

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=[(1333, s) for s in _short_sides],
                  keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=[(1333, s) for s in _short_sides],
                     keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
