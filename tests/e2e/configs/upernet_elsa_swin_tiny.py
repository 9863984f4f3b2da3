# e2e: configs/seg/upernet_elsa_swin_t_160k.py (UPerNet + FCN auxiliary head, ELSA-Swin) at a
# tiny width on the generated ADE20K-layout data (64 px crops; heads keep 150 classes).
_base_ = '../../../configs/seg/upernet_elsa_swin_t_160k.py'
data_root = '{{$LSA_E2E_ADE:data/demo_ade/ADEChallengeData2016}}'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                  group_width=4),
        drop_path_rate=0.1, init_cfg=None),
    decode_head=dict(in_channels=[24, 48, 96, 192], channels=32),
    auxiliary_head=dict(in_channels=96, channels=16))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=3))
log_processor = dict(window_size=1)
