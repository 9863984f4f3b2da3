# e2e: configs/det/cascade_mask_rcnn_elsa_swin_t_1x.py (Cascade Mask R-CNN, 4conv1fc GIoU heads,
# ELSA-Swin) at a tiny width on the generated shapes data.
_base_ = [
    '../../../configs/det/cascade_mask_rcnn_elsa_swin_t_1x.py',
    '../../../configs/det/demo/_base_/coco_shapes.py',
]
ch = 32
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                  group_width=4),
        init_cfg=None),
    neck=dict(in_channels=[24, 48, 96, 192], out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=[dict(h, in_channels=ch, conv_out_channels=ch, fc_out_channels=64,
                        num_classes=3) for h in _base_.model.roi_head.bbox_head],
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch, num_classes=3)),
    train_cfg=dict(rcnn=[dict(c, sampler=dict(c.sampler, num=64))
                         for c in _base_.model.train_cfg.rcnn]),
    test_cfg=dict(rcnn=dict(max_per_img=20, score_thr=0.0)))  # always some output

train_dataloader = dict(_delete_=True, **dict(_base_.shapes_train_dataloader, batch_size=2))
val_dataloader = dict(_delete_=True, **_base_.shapes_val_dataloader)
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, **_base_.shapes_val_evaluator)
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=1, val_interval=100)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=3))
log_processor = dict(window_size=1)
