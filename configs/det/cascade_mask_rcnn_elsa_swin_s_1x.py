# Cascade Mask R-CNN + FPN with an ELSA-Swin-S backbone, 1x schedule, COCO (ELSA paper, Table: COCO).
# Official recipe (damo-cv/ELSA det/configs/elsa_swin/cascade_elsa_small_1x.py): the
# ELSA-Swin-T recipe (cascade_mask_rcnn_elsa_swin_t_1x.py) with the small backbone and drop path 0.2.
# Backbone weights: the official ImageNet-1k ELSA-Swin-S checkpoint converted with
#   python tools/model_converters/elsa2lsa.py elsa_small.pth checkpoints/elsa_swin_s_in1k.pth --backbone-only
# (see docs/model_zoo.md).
_base_ = './cascade_mask_rcnn_elsa_swin_t_1x.py'

checkpoint = 'checkpoints/elsa_swin_s_in1k.pth'  # noqa
model = dict(backbone=dict(arch='small', drop_path_rate=0.2, init_cfg=dict(checkpoint=checkpoint)))
