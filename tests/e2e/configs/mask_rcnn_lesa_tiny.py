# e2e: the demo config (itself configs/det/mask_rcnn_lesa_r50.py shrunk) for a few iterations.
_base_ = '../../../configs/det/demo/mask_rcnn_lesa_tiny_demo.py'

# score_thr 0: an almost untrained model still outputs boxes, so COCO metrics get computed
model = dict(test_cfg=dict(rcnn=dict(score_thr=0.0)))
train_dataloader = dict(batch_size=2)
train_cfg = dict(max_epochs=1, val_interval=100)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=3))
log_processor = dict(window_size=1)
