# UPerNet with a LocalViT-PVT (PVT-Tiny with locality feed-forward) backbone, ADE20K, 512x512
# crops, 160k iterations. Beyond the LocalViT paper (ImageNet only): no published numbers.
# Recipe: the ELSA-Swin / Swin UPerNet recipe (AdamW 6e-5 / wd 0.01, 1500 warm-up iterations,
# poly decay, 8 GPUs x 2 images) with drop path 0.1; the locality feed-forward's BatchNorms keep
# their ImageNet statistics (norm_eval=True). UPerHead on the four stage outputs, FCN auxiliary
# head on stage 2.
# Backbone weights: the official localvit_pvt.pth (LocalViT release v1.0.0) converted with
#   python tools/model_converters/localvit2lsa.py localvit_pvt.pth checkpoints/localvit_pvt_in1k.pth
# (see docs/model_zoo.md).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_160k.py',
]
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmseg'

crop_size = (512, 512)
checkpoint = 'checkpoints/localvit_pvt_in1k.pth'  # noqa
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='lsa.LocalViTPVT',
        arch='tiny',
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))

# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
