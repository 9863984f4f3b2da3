# LocalViT-PVT (PVT-Tiny host). Same recipe; PVT's no-decay set is cls_token only (its
# pos_embed1-4 ARE decayed by the official trainer). The classifier uses the final-normed
# class token of stage 3.
_base_ = ['./localvit-tiny_8xb128_in1k.py']
model = dict(
    backbone=dict(_delete_=True, type='lsa.LocalViTPVT', arch='tiny', img_size=224,
                  drop_path_rate=0.1, out_type='cls_token', out_indices=3),
    head=dict(in_channels=512))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'_delete_': True,
                                                     '.cls_token': dict(decay_mult=0.0)}))
