"""Write a deterministic synthetic dataset for the demo, CI or a quick experiment.

Examples::

    python tools/misc/make_demo_data.py coco data/demo_coco --num-train 64 --num-val 16
    python tools/misc/make_demo_data.py ade20k data/demo_ade
    python tools/misc/make_demo_data.py cls data/demo_cls --size 32 32
"""
from __future__ import annotations

import argparse
import json

from lsa.datasets import make_ade20k, make_cls_folder, make_coco_instances
from lsa.datasets.shapes import DEFAULT_CLASSES, SHAPES

DEFAULTS = {  # kind -> (num_train, num_val, size)
    'coco': (64, 16, (128, 128)),
    'ade20k': (16, 8, (64, 64)),
    'cls': (8, 4, (32, 32)),
}


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer >= {low}, got {text!r}') from None
        if value < low:
            raise argparse.ArgumentTypeError(f'expected an integer >= {low}, got {value}')
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate a synthetic lsa demo dataset')
    parser.add_argument('kind', choices=sorted(DEFAULTS), help='dataset layout to write')
    parser.add_argument('out_dir', help='output folder')
    parser.add_argument('--num-train', type=_at_least(1),
                        help='training images (per class for cls)')
    parser.add_argument('--num-val', type=_at_least(1), help='validation images (per class for cls)')
    parser.add_argument('--seed', type=_at_least(0), default=0, help='random seed (default 0)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='image size')
    parser.add_argument('--classes', nargs='+', choices=SHAPES,
                        default=list(DEFAULT_CLASSES), help='shape classes')
    parser.add_argument('--max-objects', type=int, default=3,
                        help='most objects per image (coco, ade20k)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    num_train, num_val, size = DEFAULTS[args.kind]
    kwargs = dict(num_train=args.num_train if args.num_train is not None else num_train,
                  num_val=args.num_val if args.num_val is not None else num_val,
                  seed=args.seed, size=tuple(args.size or size), classes=args.classes)
    if args.kind == 'coco':
        info = make_coco_instances(args.out_dir, max_objects=args.max_objects, **kwargs)
    elif args.kind == 'ade20k':
        info = make_ade20k(args.out_dir, max_objects=args.max_objects, **kwargs)
    else:
        info = make_cls_folder(args.out_dir, **kwargs)
    print(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in info.items()}))
    return info


if __name__ == '__main__':
    main()
