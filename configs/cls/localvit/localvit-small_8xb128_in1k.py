# LocalViT-S (DeiT-S width, 8 heads, SE width 4). Same recipe (the README's
# `--model localvit_small` is registered officially as localvit_small_mlp4_act3_r384).
_base_ = ['./localvit-tiny_8xb128_in1k.py']
model = dict(backbone=dict(arch='small'), head=dict(in_channels=384))
