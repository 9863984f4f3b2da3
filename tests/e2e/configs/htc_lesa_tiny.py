# e2e: configs/det/htc_lesa_wrn50.py (HTC with its semantic branch, LESA-WRN, DCN c3-c5) at a
# tiny width on the generated shapes data (its semantic/ maps stand in for COCO-stuff).
_base_ = [
    '../../../configs/det/htc_lesa_wrn50.py',
    '../../../configs/det/demo/_base_/coco_shapes.py',
]
ch = 32
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, base_channels=16, stage_blocks=(1, 1, 2, 2), widen_factor=2),
        stage_spatial_res=(32, 16, 8, 4),
        attn_cfg=dict(type='lsa.LESAAttention', with_cp=False),
        frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=[dict(h, in_channels=ch, fc_out_channels=64, num_classes=3)
                   for h in _base_.model.roi_head.bbox_head],
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=[dict(h, in_channels=ch, conv_out_channels=ch, num_classes=3)
                   for h in _base_.model.roi_head.mask_head],
        semantic_roi_extractor=dict(out_channels=ch),
        semantic_head=dict(in_channels=ch, conv_out_channels=ch, num_classes=4)),
    train_cfg=dict(rcnn=[dict(c, sampler=dict(c.sampler, num=64))
                         for c in _base_.model.train_cfg.rcnn]),
    test_cfg=dict(rcnn=dict(max_per_img=20, score_thr=0.0)))  # always some output

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='Resize', scale=_base_.shapes_img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    _delete_=True,
    **dict(_base_.shapes_train_dataloader, batch_size=2, dataset=dict(
        _base_.shapes_train_dataloader.dataset, pipeline=train_pipeline,
        data_prefix=dict(img='train/', seg='semantic/train/'))))
val_dataloader = dict(_delete_=True, **_base_.shapes_val_dataloader)
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, **_base_.shapes_val_evaluator)
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=1, val_interval=100)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=3))
log_processor = dict(window_size=1)
