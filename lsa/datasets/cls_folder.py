"""A synthetic classification dataset in the folder format of mmpretrain.

Layout written under ``out_dir``::

    train/<class>/000000.png ...    val/<class>/000000.png ...
    meta/train.txt  meta/val.txt    (``<class>/<file> <label>`` lines)

``CustomDataset(data_root=out_dir, data_prefix='train')`` reads the folders (classes
are the sorted folder names); ``CustomDataset(..., ann_file='meta/train.txt',
data_prefix='train')`` reads the same split through the meta file, as
``ImageNet`` does. Each image shows one shape of its class on a textured
background; labels in the meta files index the sorted class names.
"""
from __future__ import annotations

import os
import os.path as osp

import cv2
import numpy as np

from .shapes import DEFAULT_CLASSES, check_classes, render_scene


def make_cls_folder(out_dir: str, num_train: int = 8, num_val: int = 4, seed: int = 0,
                    size: tuple[int, int] = (32, 32),
                    classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES) -> dict:
    """Write the synthetic classification dataset and return what a config needs.

    Args:
        out_dir: Root folder (created).
        num_train: Training images per class.
        num_val: Validation images per class.
        seed: Seed; the same arguments always give byte-identical files.
        size: Image (height, width).
        classes: Shape classes (names from :data:`lsa.datasets.shapes.SHAPES`).

    Returns:
        ``dict(data_root, classes)`` with ``classes`` sorted as mmpretrain sorts folders.
    """
    classes = tuple(sorted(check_classes(classes, 'make_cls_folder')))
    if num_train < 1 or num_val < 1:
        raise ValueError(f'make_cls_folder: num_train and num_val must be >= 1, '
                         f'got {num_train}, {num_val}')
    height, width = size
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    for split, num, rng in (('train', num_train, rngs[0]), ('val', num_val, rngs[1])):
        lines = []
        for label, name in enumerate(classes):
            os.makedirs(osp.join(out_dir, split, name), exist_ok=True)
            for i in range(num):
                image, _ = render_scene(rng, height, width, (name,), max_objects=1,
                                        radius_range=(0.25, 0.4))
                file_name = f'{i:06d}.png'
                cv2.imwrite(osp.join(out_dir, split, name, file_name), image)
                lines.append(f'{name}/{file_name} {label}\n')
        with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    return dict(data_root=out_dir, classes=classes)
