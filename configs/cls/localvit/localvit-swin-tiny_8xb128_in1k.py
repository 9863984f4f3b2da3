# LocalViT-Swin (Swin-T host, LFF with SE width 16). Same recipe; drop path is fixed at 0.1
# (the official factory ignores the CLI value); the relative position bias tables ARE decayed
# (timm 0.3.2 ignores Swin's no_weight_decay_keywords). Head: final norm (norm3) -> global
# average pooling -> linear.
_base_ = ['./localvit-tiny_8xb128_in1k.py']
model = dict(
    backbone=dict(_delete_=True, type='lsa.LocalViTSwin', arch='tiny', drop_path_rate=0.1,
                  out_indices=(3, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(in_channels=768))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'_delete_': True}))
