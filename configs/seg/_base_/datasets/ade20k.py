# mmseg's ADE20K 512x512 data with the test-time augmentation of the official ELSA numbers:
# mmseg 0.x `--aug-test` (damo-cv/ELSA seg/configs/_base_/datasets/ade20k.py, MultiScaleFlipAug):
# for each ratio r, a keep-ratio resize into (2048 r, 512 r) (long side <= 2048 r, short side
# <= 512 r) of the original image, each also flipped; the softmax outputs are averaged.
# mmseg 1.x's own tta_pipeline rescales the original image by r instead (other sizes).
# Run it with mmseg's `tools/test.py CONFIG CKPT --tta` (it swaps in `tta_pipeline`/`tta_model`).
# Loading: 8 GPUs x 2 images, as the official ELSA UPerNet recipe (ade20k_8x2.py).
_base_ = './ade20k_8x2.py'

img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True)
             for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
