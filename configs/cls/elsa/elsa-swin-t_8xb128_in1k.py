# ELSA-Swin-T on ImageNet-1k: the published recipe of damo-cv/ELSA (the training command in its
# top-level README.md, "Training from scratch", run by cls/train.py; spec B6).
# 8 GPUs x 128 images, AdamW lr 1e-3 (not batch-scaled) wd 0.05, no decay on 1-D params and
# biases only (the bias table and the ghost heads ARE decayed, as in the timm trainer), 20
# warm-up epochs from 1e-6 stepped per epoch, cosine to 1e-5 at epoch 300, then 10 cool-down
# epochs at 1e-5 (310 in all), grad-norm clip 5, AMP, drop path 0.1, RandAugment m9/mstd0.5,
# Mixup 0.8 / CutMix 1.0, label smoothing 0.1, RandomErasing 0.25; eval bicubic resize 248
# (crop_pct 0.9) + centre crop 224. Known deviation: timm evaluates the cosine at the absolute
# epoch (lr 0.989e-3 at epoch 20), mmengine restarts it at the end of the warm-up (1e-3).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(_delete_=True, type='lsa.ELSASwin', arch='tiny', drop_path_rate=0.1,
                  out_indices=(3, )),
    head=dict(in_channels=768))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(
    batch_size=128,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=248, edge='short', backend='pillow',
             interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=224),
        dict(type='PackInputs'),
    ]))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0,
                       flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024, enable=False)
