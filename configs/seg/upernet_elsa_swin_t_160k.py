# UPerNet with an ELSA-Swin-T backbone, ADE20K, 512x512 crops, 160k iterations (ELSA paper).
# Official recipe (damo-cv/ELSA seg/configs/elsa_swin/upernet_elsa_tiny_160k.py): UPerHead
# (pool scales 1/2/3/6, 512 channels) + FCN auxiliary head on stage 2 (weight 0.4), SyncBN in the
# heads, AdamW 6e-5 / wd 0.01, poly schedule with 1500 warm-up iterations, drop path 0.3,
# 8 GPUs x 2 images. The reported mIoU is the official mmseg 0.x `--aug-test` (keep-ratio resize to
# (2048, 512) x {0.5, ..., 1.75} + flip), which `tta_pipeline` reproduces (_base_/datasets/ade20k.py).
# Backbone and its weights: configs/_base_/models/elsa_swin_t.py.
_base_ = [
    './_base_/models/upernet_elsa_swin_t.py',
    './_base_/datasets/ade20k.py',  # 8 GPUs x 2 images, the official TTA
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_160k.py',
]

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(drop_path_rate=0.3),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
