# LocalViT-TNT (TNT-T host). Same recipe; no decay on cls_token, patch_pos and pixel_pos.
_base_ = ['./localvit-tiny_8xb128_in1k.py']
model = dict(
    backbone=dict(_delete_=True, type='lsa.LocalViTTNT', arch='tiny', img_size=224,
                  drop_path_rate=0.1, out_type='cls_token'))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '_delete_': True, '.cls_token': dict(decay_mult=0.0), '.patch_pos': dict(decay_mult=0.0),
    '.pixel_pos': dict(decay_mult=0.0)}))
