# The LocalViT-PVT (PVT-Tiny with locality feed-forward) backbone of the lsa detection and
# segmentation configs: the four stage outputs (strides 4-32, 64/128/320/512 channels), drop
# path 0.1, position embeddings resized to the input, the locality feed-forward's BatchNorms
# kept at their ImageNet statistics (norm_eval=True, 2 images per GPU), initialised from the
# official localvit_pvt.pth (LocalViT release v1.0.0) converted with
#   python tools/model_converters/localvit2lsa.py localvit_pvt.pth checkpoints/localvit_pvt_in1k.pth
# (see docs/model_zoo.md). Frames take it as `backbone=dict(_base_._localvit_pvt_t, _delete_=True)`.
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
checkpoint = 'checkpoints/localvit_pvt_in1k.pth'  # noqa
_localvit_pvt_t = dict(
    type='lsa.LocalViTPVT',
    arch='tiny',
    drop_path_rate=0.1,
    out_type='featmap',
    out_indices=(0, 1, 2, 3),
    norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.'))
_localvit_pvt_t_channels = [64, 128, 320, 512]
