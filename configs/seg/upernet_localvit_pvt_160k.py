# UPerNet with a LocalViT-PVT (PVT-Tiny with locality feed-forward) backbone, ADE20K, 512x512
# crops, 160k iterations. Beyond the LocalViT paper (ImageNet only): no published numbers.
# Recipe: the ELSA-Swin / Swin UPerNet recipe (AdamW 6e-5 / wd 0.01, 1500 warm-up iterations,
# poly decay, 8 GPUs x 2 images) with drop path 0.1; the locality feed-forward's BatchNorms keep
# their ImageNet statistics (norm_eval=True). UPerHead on the four stage outputs, FCN auxiliary
# head on stage 2.
# Backbone and its weights: configs/_base_/models/localvit_pvt_t.py.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    './_base_/datasets/ade20k_8x2.py',  # 8 GPUs x 2 images
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_160k.py',
    '../_base_/models/localvit_pvt_t.py',
]

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_base_._localvit_pvt_t, _delete_=True),
    decode_head=dict(in_channels=_base_._localvit_pvt_t_channels, num_classes=150),
    auxiliary_head=dict(in_channels=_base_._localvit_pvt_t_channels[2], num_classes=150))
