# LocalViT-T (DeiT-T host, 4 heads, LFF with SE width 4) on ImageNet-1k: the published recipe
# of ofsoundof/LocalViT main.py (the DeiT recipe; spec B7). 8 GPUs x 128 images, AdamW lr 1e-3
# (5e-4 * 1024 / 512) wd 0.05 with no decay on 1-D params, biases, cls_token and pos_embed;
# 5 warm-up epochs from 1e-6 then cosine to 1e-5, stepped per epoch, 300 epochs; no grad clip;
# AMP; drop path 0.1; RandAugment m9/mstd0.5, Mixup 0.8 / CutMix 1.0 (switch 0.5), label
# smoothing 0.1, RandomErasing 0.25 (per-pixel), repeated augmentation x3; eval bicubic resize
# 256 + centre crop 224. Not reproduced: the (unused for evaluation) model EMA.
# Known schedule deviation: the official loop steps the scheduler after each epoch
# (`lr_scheduler.step(epoch)`), so its epoch e trains at lr(e - 1) (epochs 0 and 1 at 1e-6);
# here epoch e trains at lr(e). Also timm's cosine is evaluated at the absolute epoch, this one
# restarts after the warm-up (README "Recipe").
# The other LocalViT configs inherit from this file.
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(_delete_=True, type='lsa.LocalViT', arch='tiny', img_size=224,
                  drop_path_rate=0.1, out_type='cls_token'),
    neck=None,
    head=dict(_delete_=True, type='LinearClsHead', num_classes=1000, in_channels=192,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

train_dataloader = dict(
    batch_size=128, sampler=dict(_delete_=True, type='RepeatAugSampler', num_repeats=3,
                                 shuffle=True))
val_dataloader = dict(batch_size=192)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        _delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024, enable=False)
