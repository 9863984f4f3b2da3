# LocalViT-T-SE4: LocalViT-T with SE reduction 4 (SE width 192). Same recipe.
_base_ = ['./localvit-tiny_8xb128_in1k.py']
model = dict(backbone=dict(arch='tiny-se4'))
