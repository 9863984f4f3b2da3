# LocalViT-T2T (official `localvit_T2t_conv7`: T2T-ViT-7 host, performer T2T module, LFF with SE
# width 4 in the encoder and SE-less LFFs in the T2T token layers). Same recipe (the authors
# state "same training protocol"; they publish no T2T numbers or weights). The no-decay set is
# T2T-ViT's: cls_token only; pos_embed (fixed sinusoid) and the performer `w` matrices are
# parameters with requires_grad=False, so they are never updated.
_base_ = ['./localvit-tiny_8xb128_in1k.py']
model = dict(
    backbone=dict(_delete_=True, type='lsa.LocalViTT2T', arch='t2t-7', img_size=224,
                  drop_path_rate=0.1, out_type='cls_token'),
    head=dict(in_channels=256))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'_delete_': True,
                                                     '.cls_token': dict(decay_mult=0.0)}))
