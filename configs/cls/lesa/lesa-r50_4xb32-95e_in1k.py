# LESA-ResNet50 on ImageNet-1k: the published recipe of Chenglin-Yang/LESA_classification
# (README train command + train.py defaults): 4 GPUs x 32 images (DataParallel, per-GPU BN),
# SGD lr 0.05 momentum 0.9 nesterov, weight decay 8e-5 on every parameter (norms, position
# tables), 5 warm-up epochs then cosine to 0, stepped per iteration, 95 epochs, plain
# cross-entropy; RandomResizedCrop 224 (bilinear) + flip; eval resize 256 / centre crop 224.
# The classification form runs at 224x224 only (1-D position embedding over 14x14 tokens).
_base_ = [
    '../_base_/models/resnet_classifier.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/default_runtime.py',
]
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(type='lsa.LESAResNet', arch='r50', form='cls', out_indices=(3, )),
    head=dict(init_cfg=None))  # the official fc keeps PyTorch's default Linear init

# 4 GPUs x 32 images = 128 (official --batch_size 128 split by DataParallel)
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=32)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True, weight_decay=8e-5))
# official warm-up: lr * (epoch + (iter + 1) / iters_per_epoch) / 5, i.e. linear from ~0;
# then 0.5 * (1 + cos(pi * t / T)) over the remaining 90 epochs, per iteration, to 0
param_scheduler = [
    dict(type='LinearLR', start_factor=2e-5, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=90, eta_min=0.0, by_epoch=True, begin=5, end=95,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=95, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)
