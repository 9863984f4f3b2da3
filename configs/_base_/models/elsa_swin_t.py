# The ELSA-Swin-T backbone of every ELSA detection and segmentation config, in the official
# det/seg form: four NCHW outputs (strides 4-32, 96/192/384/768 channels, final norms norm0-3),
# stage-3 windows padding maps smaller than 7x7, initialised from the official ImageNet-1k
# checkpoint converted with
#   python tools/model_converters/elsa2lsa.py elsa_tiny.pth checkpoints/elsa_swin_t_in1k.pth --backbone-only
# (see docs/model_zoo.md). Frames take it as `backbone=dict(_base_._elsa_swin_t, _delete_=True)`;
# leaves set drop_path_rate (and, for ELSA-Swin-S, arch='small' and their own `checkpoint`,
# merged in as `init_cfg=dict(checkpoint=checkpoint)`).
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
checkpoint = 'checkpoints/elsa_swin_t_in1k.pth'  # noqa
_elsa_swin_t = dict(
    type='lsa.ELSASwin',
    arch='tiny',
    out_indices=(0, 1, 2, 3),
    pad_small_map=True,  # stage-3 windows pad maps smaller than 7x7 (official det/seg)
    init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.'))
_elsa_swin_t_channels = [96, 192, 384, 768]
