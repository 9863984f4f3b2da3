# ELSA-Swin detection 3x schedule: the adamw_1x optimiser, 36 epochs, x0.1 at epochs 27 and 33,
# linear warm-up over 500 iterations (damo-cv/ELSA det/configs/elsa_swin/*_3x.py).
_base_ = './adamw_1x.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
