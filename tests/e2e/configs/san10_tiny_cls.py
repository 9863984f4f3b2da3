# e2e: configs/cls/san/san10-pairwise_8xb32_in1k.py (SAN pairwise, ImageNet layout with meta
# files) at a tiny width on the generated classification data (64 px, 3 classes).
_base_ = '../../../configs/cls/san/san10-pairwise_8xb32_in1k.py'
data_root = '{{$LSA_E2E_CLS:data/demo_cls}}'
model = dict(
    backbone=dict(arch=dict(_delete_=True, widths=(64, 64, 64, 64, 64), layers=(1, 1, 1, 1, 1),
                            kernels=(3, 3, 3, 3, 3))),
    head=dict(num_classes=3, in_channels=64, topk=(1,)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=72, edge='short'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
param_scheduler = dict(_delete_=True, type='ConstantLR', factor=1.0, by_epoch=False, begin=0,
                       end=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=3))
log_processor = dict(window_size=1)
