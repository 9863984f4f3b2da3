# SAN19 pairwise on ImageNet-1k: the published recipe of hszhao/SAN (see san10-pairwise_8xb32_in1k.py).
_base_ = ['./san10-pairwise_8xb32_in1k.py']

model = dict(backbone=dict(arch='san19', sa_type='pairwise'))
