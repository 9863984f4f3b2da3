# UPerNet with an ELSA-Swin-S backbone, ADE20K, 512x512 crops, 160k iterations (ELSA paper).
# Official recipe (damo-cv/ELSA seg/configs/elsa_swin/upernet_elsa_small_160k.py): the ELSA-Swin-T
# recipe (upernet_elsa_swin_t_160k.py) with the small backbone; drop path stays 0.3.
# Backbone weights: the official ImageNet-1k ELSA-Swin-S checkpoint converted with
#   python tools/model_converters/elsa2lsa.py elsa_small.pth checkpoints/elsa_swin_s_in1k.pth --backbone-only
# (see docs/model_zoo.md).
_base_ = './upernet_elsa_swin_t_160k.py'

checkpoint = 'checkpoints/elsa_swin_s_in1k.pth'  # noqa
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=checkpoint)))
