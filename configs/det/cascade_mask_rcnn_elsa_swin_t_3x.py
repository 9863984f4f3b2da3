# Cascade Mask R-CNN + FPN with an ELSA-Swin-T backbone, 3x schedule, COCO (ELSA paper, Table: COCO).
# Official recipe (damo-cv/ELSA det/configs/elsa_swin/cascade_elsa_tiny_3x.py): multi-scale + crop
# training, 4conv1fc GIoU box heads, AdamW 1e-4 / wd 0.05, 36 epochs, drop path 0.2, 8 GPUs x 2 images, Apex AMP
# (use `tools/train.py ... --amp` or `tools/dist_train.sh ... 8 --amp`).
# Backbone and its weights: configs/_base_/models/elsa_swin_t.py.
_base_ = [
    './_base_/models/cascade_mask_rcnn_elsa_swin_t_fpn.py',
    './_base_/datasets/coco_instance_ms_crop.py',
    './_base_/schedules/adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(backbone=dict(drop_path_rate=0.2))
