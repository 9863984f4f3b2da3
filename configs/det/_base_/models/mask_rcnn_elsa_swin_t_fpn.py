# Mask R-CNN + FPN (mmdet) on the ELSA-Swin-T backbone (damo-cv/ELSA
# det/configs/_base_/models/mask_rcnn_elsa_swin_fpn.py).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../../../_base_/models/elsa_swin_t.py']

model = dict(backbone=dict(_base_._elsa_swin_t, _delete_=True),
             neck=dict(in_channels=_base_._elsa_swin_t_channels))
