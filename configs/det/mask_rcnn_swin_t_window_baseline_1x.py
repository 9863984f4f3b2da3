# Attention swap made only by inheritance (issue 7's worked example): the Mask R-CNN ELSA-Swin-T
# 1x recipe with Swin (shifted) window attention in all four stages, i.e. the plain Swin-T
# baseline (28,288,354 parameters as a 1000-class classifier, like Microsoft's Swin-T) trained
# with exactly the ELSA recipe: the like-for-like comparison the ELSA paper makes. As in that
# recipe, the relative position bias tables are weight-decayed (Swin's own recipe exempts them).
# Initialisation: lsa ships no converter for Microsoft's Swin-T ImageNet weights, so this
# config trains from scratch as written; with converted weights set
#   model.backbone.init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
# No published numbers for this exact recipe.
_base_ = './mask_rcnn_elsa_swin_t_1x.py'

model = dict(
    backbone=dict(
        attn_cfgs=dict(type='lsa.ShiftWindowAttention', window_size=7),
        init_cfg=None))
