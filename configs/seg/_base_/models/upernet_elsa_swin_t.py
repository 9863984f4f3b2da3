# UPerNet (UPerHead on the four stages + FCN auxiliary head on stage 2, mmseg's Swin frame) on the
# ELSA-Swin-T backbone (damo-cv/ELSA seg/configs/_base_/models/upernet_elsa_swin.py).
_base_ = ['mmseg::_base_/models/upernet_swin.py', '../../../_base_/models/elsa_swin_t.py']

model = dict(backbone=dict(_base_._elsa_swin_t, _delete_=True),
             decode_head=dict(in_channels=_base_._elsa_swin_t_channels),
             auxiliary_head=dict(in_channels=_base_._elsa_swin_t_channels[2]))
