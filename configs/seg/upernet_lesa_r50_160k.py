# UPerNet with a LESA-ResNet-50 backbone, ADE20K, 512x512 crops, 160k iterations. Beyond the
# LESA paper (COCO and ImageNet only): no published numbers.
# Recipe: mmseg's UPerNet ResNet-50 ADE20K 160k recipe (SGD lr 0.01, momentum 0.9, wd 5e-4,
# poly 0.9 to 1e-4, 4 GPUs x 4 images; UPerHead + FCN auxiliary head on c4, SyncBN in the heads).
# Backbone: LESA in its detection form (strides 1/2/2/2, 2-D relative position tables that accept
# any input size; sized here for 512x512 crops: stage_spatial_res 128/64/32/16), no deformable
# convs, BatchNorms trained as in mmseg's ResNet recipe.
# Backbone weights: the official LESA-ResNet-50 ImageNet checkpoint made for detection
# (LESA_detection README, "lesa_resnet50_pretrained"), converted with
#   python tools/model_converters/lesa2lsa.py checkpoint.pth checkpoints/lesa_r50_in1k_det.pth
# (see docs/model_zoo.md). As in detection, its position tables are not transferred.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmseg'

crop_size = (512, 512)
checkpoint = 'checkpoints/lesa_r50_in1k_det.pth'  # noqa
model = dict(
    pretrained=None,
    # test images (short side 512, any aspect) are padded to /32 and the prediction cropped
    # back: LESA's stride-2 block needs even maps
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    backbone=dict(
        _delete_=True,
        type='lsa.LESAResNet',
        arch='r50',
        form='det',
        attn_cfg=dict(type='lsa.LESAAttention'),  # the block replacing c4/c5 3x3 convs
        stage_spatial_res=(128, 64, 32, 16),
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048], num_classes=150),
    auxiliary_head=dict(in_channels=1024, num_classes=150))
