"""A synthetic semantic-segmentation dataset in the ADE20K layout for mmseg's ``ADE20KDataset``.

Layout written under ``out_dir``::

    ADEChallengeData2016/images/{training,validation}/000000.jpg
    ADEChallengeData2016/annotations/{training,validation}/000000.png

Annotations are single-channel uint8 with ADE20K's convention: 0 = "other"
(ignored through ``reduce_zero_label=True``) and 1..150 = classes. The textured
background is labelled :data:`BACKGROUND_LABEL` and shape class ``k`` of
``classes`` is labelled ``FIRST_SHAPE_LABEL + k``, so after ``reduce_zero_label``
the model sees classes 0 (background) and 1..K; heads keep ``num_classes=150``.
A thin unlabelled (0) ring around each shape exercises the ignore index.
"""
from __future__ import annotations

import os
import os.path as osp

import cv2
import numpy as np

from .shapes import DEFAULT_CLASSES, check_classes, render_scene

#: ADE20K label of the background (1 = 'wall').
BACKGROUND_LABEL = 1
#: ADE20K label of the first shape class.
FIRST_SHAPE_LABEL = 2
_SPLITS = (('training', 'train'), ('validation', 'val'))


def make_ade20k(out_dir: str, num_train: int = 16, num_val: int = 8, seed: int = 0,
                size: tuple[int, int] = (64, 64),
                classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
                max_objects: int = 3) -> dict:
    """Write the synthetic ADE20K-layout dataset and return what a config needs.

    Args:
        out_dir: Root folder (created); ``data_root`` is ``out_dir/ADEChallengeData2016``.
        num_train: Training images.
        num_val: Validation images.
        seed: Seed; the same arguments always give byte-identical files.
        size: Image (height, width).
        classes: Shape classes (names from :data:`lsa.datasets.shapes.SHAPES`).
        max_objects: Most objects per image.

    Returns:
        ``dict(data_root, labels)`` where ``labels`` maps each name (``'background'``
        and the shape classes) to its ADE20K label value.
    """
    classes = check_classes(classes, 'make_ade20k')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'make_ade20k: num_train and num_val must be >= 1, '
                         f'got {num_train}, {num_val}')
    root = osp.join(out_dir, 'ADEChallengeData2016')
    height, width = size
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    for (folder, _), num, rng in zip(_SPLITS, (num_train, num_val), rngs):
        img_dir = osp.join(root, 'images', folder)
        ann_dir = osp.join(root, 'annotations', folder)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            image, instances = render_scene(rng, height, width, classes, max_objects=max_objects)
            label = np.full((height, width), BACKGROUND_LABEL, np.uint8)
            for inst in instances:
                ring = cv2.dilate(inst.mask, np.ones((3, 3), np.uint8)) - inst.mask
                label[ring > 0] = 0
                label[inst.mask > 0] = FIRST_SHAPE_LABEL + inst.label
            cv2.imwrite(osp.join(img_dir, f'{i:06d}.jpg'), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, f'{i:06d}.png'), label)
    labels = {'background': BACKGROUND_LABEL}
    labels.update({c: FIRST_SHAPE_LABEL + k for k, c in enumerate(classes)})
    return dict(data_root=root, labels=labels)
