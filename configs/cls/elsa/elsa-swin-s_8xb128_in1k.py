# ELSA-Swin-S on ImageNet-1k: the ELSA-Swin-T recipe (see elsa-swin-t_8xb128_in1k.py) with
# drop path 0.3 (damo-cv/ELSA README.md, "Training from scratch").
_base_ = ['./elsa-swin-t_8xb128_in1k.py']

model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
