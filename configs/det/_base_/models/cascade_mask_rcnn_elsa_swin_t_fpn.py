# Cascade Mask R-CNN + FPN with 4conv1fc GIoU box heads on the ELSA-Swin-T backbone (damo-cv/ELSA
# det/configs/_base_/models/cascade_mask_rcnn_elsa_swin_fpn.py).
_base_ = ['./cascade_mask_rcnn_r50_fpn_4conv1fc_giou.py', '../../../_base_/models/elsa_swin_t.py']

model = dict(backbone=dict(_base_._elsa_swin_t, _delete_=True),
             neck=dict(in_channels=_base_._elsa_swin_t_channels))
