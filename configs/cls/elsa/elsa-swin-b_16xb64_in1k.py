# ELSA-Swin-B on ImageNet-1k: the ELSA-Swin-T recipe (see elsa-swin-t_8xb128_in1k.py) with
# drop path 0.5 and model EMA (decay 0.99992, evaluated on the EMA weights as the README's
# 84.0); 2 nodes x 8 GPUs x 64 images = 1024, as the README advises for B.
_base_ = ['./elsa-swin-t_8xb128_in1k.py']

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
custom_hooks = [dict(type='EMAHook', momentum=8e-5, priority='ABOVE_NORMAL')]  # 1 - 0.99992
