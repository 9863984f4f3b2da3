# Mask R-CNN + FPN with an ELSA-Swin-T backbone, 1x schedule, COCO (ELSA paper, Table: COCO).
# Official recipe (damo-cv/ELSA det/configs/elsa_swin/mask_elsa_tiny_1x.py): multi-scale + crop
# training, AdamW 1e-4 / wd 0.05, 12 epochs, drop path 0.1, 8 GPUs x 2 images, Apex AMP
# (use `tools/train.py ... --amp` or `tools/dist_train.sh ... 8 --amp`).
# Backbone weights: the official ImageNet-1k ELSA-Swin-T checkpoint converted with
#   python tools/model_converters/elsa2lsa.py elsa_tiny.pth checkpoints/elsa_swin_t_in1k.pth --backbone-only
# (see docs/model_zoo.md).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/datasets/coco_instance_ms_crop.py',
    './_base_/schedules/adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
default_scope = 'mmdet'

checkpoint = 'checkpoints/elsa_swin_t_in1k.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='lsa.ELSASwin',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,  # stage-3 windows pad maps smaller than 7x7 (official det/seg)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
