# The LESA-ResNet backbone of the official LESA detection configs (Chenglin-Yang/LESA_detection):
# detection form (strides 1/2/2/2, 2-D relative position tables sized by the leaf's
# stage_spatial_res), LESA in place of the 3x3 conv of c4 blocks 1-5 and all c5 blocks,
# deformable convs (DCNv1, 1 offset group) in c3-c5, stem + c2 frozen, BatchNorm statistics
# frozen, four outputs (256/512/1024/2048 channels). Frames take it as
# `backbone=dict(_base_._lesa_dcn, _delete_=True, ...)`.
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
_lesa_dcn = dict(
    type='lsa.LESAResNet',
    arch='r50',
    form='det',
    attn_cfg=dict(type='lsa.LESAAttention'),  # the block replacing c4/c5 3x3 convs
    dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
    stage_with_dcn=(False, True, True, True),
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,  # stem + c2, as mmdet's ResNet
    norm_eval=True)
_lesa_channels = [256, 512, 1024, 2048]
