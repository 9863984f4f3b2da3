"""Convert an official ELSA-Swin checkpoint (damo-cv/ELSA) to an lsa checkpoint.

Usage::

    python tools/model_converters/elsa2lsa.py elsa_swin_tiny.pth elsa-swin-t_lsa.pth
    python tools/model_converters/elsa2lsa.py elsa_swin_base.pth out.pth --use-ema
    python tools/model_converters/elsa2lsa.py elsa_swin_tiny.pth pre.pth --backbone-only
    python tools/model_converters/elsa2lsa.py mask_rcnn_elsa_tiny_1x.pth out.pth

Classification checkpoints become mmpretrain classifiers (``backbone.*`` +
``head.fc.*``; ``configs/cls/elsa/*``); ``--backbone-only`` keeps the backbone
without the final norm, for ``init_cfg=dict(type='Pretrained', prefix='backbone.')``
in det/seg configs. Det/seg checkpoints keep every non-backbone key unchanged.
"""
import argparse

from lsa.converters.common import run_cli
from lsa.converters.elsa import convert_elsa_checkpoint


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', default=None, choices=['tiny', 'small', 'base'],
                        help='expected variant (default: inferred from the shapes)')
    parser.add_argument('--use-ema', action='store_true',
                        help='take state_dict_ema (the README evaluates ELSA-Swin-B with EMA)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write only backbone.* keys (no head, no final norm)')


def _convert(ckpt: dict, args: argparse.Namespace) -> tuple:
    sd, meta = convert_elsa_checkpoint(ckpt, use_ema=args.use_ema,
                                       backbone_only=args.backbone_only, arch=args.arch)
    meta = dict(meta, arch=meta['arch']['name'] or str(meta['arch']))
    return sd, meta


def main(argv=None) -> None:
    run_cli('elsa2lsa', __doc__.splitlines()[0], _convert, _add_arguments, argv)


if __name__ == '__main__':
    main()
