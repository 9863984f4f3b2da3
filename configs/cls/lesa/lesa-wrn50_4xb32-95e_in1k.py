# LESA-WRN50 (WRN-50-2 host, bottleneck widths x2) on ImageNet-1k: the same published recipe as
# lesa-r50_4xb32-95e_in1k.py (the official configs differ only in `wrn=True`).
_base_ = './lesa-r50_4xb32-95e_in1k.py'

model = dict(backbone=dict(arch='wrn50'))
