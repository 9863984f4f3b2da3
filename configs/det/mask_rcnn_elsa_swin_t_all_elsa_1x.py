# Attention swap made only by inheritance (issue 7's worked example): the Mask R-CNN ELSA-Swin-T
# 1x recipe with ELSA in ALL FOUR stages (published ELSA-Swin-T: ELSA in stages 0-2, Swin window
# attention in stage 3). Everything else (heads, data, schedule, drop path) is inherited.
# The ImageNet ELSA-Swin-T weights fit stages 0-2 and every non-attention layer; the stage-3
# ELSA attention starts from its initialisation (PretrainedInit loads non-strictly and lists
# the skipped keys in the log). No published numbers.
_base_ = './mask_rcnn_elsa_swin_t_1x.py'

model = dict(
    backbone=dict(
        attn_cfgs=dict(type='lsa.ELSAAttention', kernel_size=7, qk_scale=1.0, lam=0, gamma=1)))
