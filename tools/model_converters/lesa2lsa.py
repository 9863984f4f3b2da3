"""Convert an official LESA checkpoint (Chenglin-Yang/LESA_*) to an lsa checkpoint.

Usage::

    # classification (LESA_classification README): {'net': ...} with 'module.' keys
    python tools/model_converters/lesa2lsa.py lesa_resnet50/checkpoint.pth lesa-r50_in1k.pth
    # ImageNet models made for detection ('lesa_*_pretrained', pe_type detection_qr)
    python tools/model_converters/lesa2lsa.py lesa_resnet50_pretrained/.../checkpoint.pth pre.pth
    # detection (LESA_detection, mmcv format; needs mmcv when DCN offsets are present)
    python tools/model_converters/lesa2lsa.py lesa_mask_rcnn_r50.pth out.pth [--backbone-only]

Classification files become mmpretrain ``ImageClassifier`` state dicts (``backbone.*`` +
``head.fc.*``, ``configs/cls/lesa/*``). Detection files keep the ``backbone.`` prefix (the
converted backbone) and every other key unchanged. Either output can initialise a detection
backbone with ``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')``.
The result is checked key by key and shape by shape against the LESAResNet it describes.
"""
import argparse

from lsa.converters.common import run_cli
from lsa.converters.lesa import convert_lesa_checkpoint


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--form', default='auto', choices=['auto', 'cls', 'det'],
                        help='released layout (default: det if there are backbone.* keys)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='detection: write only the backbone.* keys')


def _convert(ckpt: dict, args: argparse.Namespace) -> tuple:
    sd, meta = convert_lesa_checkpoint(ckpt, form=args.form, backbone_only=args.backbone_only)
    return sd, dict(meta, lesa_config=str(meta['lesa_config']))


def main(argv=None) -> None:
    run_cli('lesa2lsa', __doc__.splitlines()[0], _convert, _add_arguments, argv)


if __name__ == '__main__':
    main()
