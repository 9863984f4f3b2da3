"""Convert an official SAN checkpoint (hszhao/SAN) to an lsa/mmpretrain checkpoint.

Usage::

    python tools/model_converters/san2lsa.py model_best.pth san10-pairwise_lsa.pth [--arch ...]

The output loads strictly into the classifier built from ``configs/cls/san/*.py``.
"""
import argparse

from lsa.converters.common import run_cli
from lsa.converters.san import convert_san_checkpoint


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--arch', default=None,
                        help="expected variant, e.g. 'san10-pairwise' (default: inferred)")


def _convert(ckpt: dict, args: argparse.Namespace) -> tuple:
    return convert_san_checkpoint(ckpt, arch=args.arch)


def main(argv=None) -> None:
    run_cli('san2lsa', __doc__.splitlines()[0], _convert, _add_arguments, argv)


if __name__ == '__main__':
    main()
