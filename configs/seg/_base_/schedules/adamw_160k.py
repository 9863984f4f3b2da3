# ELSA-Swin (= Swin) ADE20K optimiser and schedule (damo-cv/ELSA
# seg/configs/elsa_swin/upernet_elsa_*_160k.py, mmseg 0.11 format): AdamW lr 6e-5, betas
# (0.9, 0.999), weight decay 0.01, no decay on parameters whose name contains 'norm', decay on
# everything else, stage-3 relative position bias tables included: the official configs also
# list 'relative_position_bias_table', but the official tables are named 'rb', so the key matches
# nothing and they ARE decayed; lsa's tables carry that name, so the key is left out here
# ('absolute_pos_embed' matches nothing in either and stays, as upstream);
# linear warm-up over 1500 iterations from 1e-6x, then poly decay (power 1.0) to 0 at 160k
# iterations; 8 GPUs x 2 images; fp32.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
