# Cascade Mask R-CNN as ELSA-Swin (and Swin) train it: the mmdet Cascade Mask R-CNN + FPN, with
# each of the three box heads replaced by a 4-conv + 1-fc head (SyncBN in the convs) that
# regresses decoded boxes with a GIoU loss of weight 10 (damo-cv/ELSA
# det/configs/elsa_swin/cascade_elsa_*.py). IoU thresholds 0.5/0.6/0.7 and stage loss weights
# 1/0.5/0.25 come from the mmdet base. The ResNet backbone here is replaced by every leaf.
_base_ = 'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'


def _box_head(target_stds):
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                        target_stds=target_stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    roi_head=dict(bbox_head=[
        _box_head([0.1, 0.1, 0.2, 0.2]),
        _box_head([0.05, 0.05, 0.1, 0.1]),
        _box_head([0.033, 0.033, 0.067, 0.067]),
    ]))
