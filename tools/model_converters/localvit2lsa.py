"""Convert an official LocalViT checkpoint (ofsoundof/LocalViT release) to an lsa one.

    python tools/model_converters/localvit2lsa.py localvit_t.pth localvit-t_lsa.pth
    python tools/model_converters/localvit2lsa.py localvit_pvt.pth out.pth --arch localvit-pvt

The result loads strictly into the classifier of ``configs/cls/localvit/<arch>`` (keys
``backbone.*`` and ``head.fc.*``).
"""
from lsa.converters.common import run_cli
from lsa.converters.localvit import ARCHS, convert_localvit_checkpoint


def _add_arguments(parser):
    parser.add_argument('--arch', choices=sorted(ARCHS), default=None,
                        help='published model (default: detected from the keys)')
    parser.add_argument('--num-classes', type=int, default=1000)


def _convert(ckpt, args):
    return convert_localvit_checkpoint(ckpt, args.arch, args.num_classes)


def main(argv=None):
    run_cli('localvit2lsa', 'Official LocalViT checkpoint -> lsa (mmpretrain classifier)',
            _convert, _add_arguments, argv)


if __name__ == '__main__':
    main()
