"""A synthetic COCO instance-segmentation dataset (polygon masks) for mmdet's ``CocoDataset``.

Layout written under ``out_dir``::

    train/000000.jpg ...            val/000000.jpg ...
    annotations/instances_train.json
    annotations/instances_val.json
    semantic/train/000000.png ...   semantic/val/000000.png ...   (HTC's semantic branch)

Each JSON has ``images``, ``categories`` (ids 1..K, names = the shape classes) and
``annotations`` with ``bbox`` ``[x, y, w, h]``, ``area``, ``iscrowd=0`` and
``segmentation`` as polygons. Use ``metainfo=dict(classes=<the class names>)`` in
every mmdet dataloader. The ``semantic`` maps (uint8, shape class k -> k, background
-> K = number of classes) serve HTC's semantic head as COCO-stuff maps do
(``data_prefix=dict(img='train/', seg='semantic/train/')``).
"""
from __future__ import annotations

import json
import os
import os.path as osp

import cv2
import numpy as np

from .shapes import DEFAULT_CLASSES, check_classes, mask_to_bbox, mask_to_polygons, render_scene


def _coco_split(rng: np.random.Generator, out_dir: str, split: str, num: int,
                size: tuple[int, int], classes: tuple[str, ...], max_objects: int) -> dict:
    img_dir = osp.join(out_dir, split)
    sem_dir = osp.join(out_dir, 'semantic', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(sem_dir, exist_ok=True)
    height, width = size
    images, annotations = [], []
    for i in range(num):
        image, instances = render_scene(rng, height, width, classes, max_objects=max_objects)
        file_name = f'{i:06d}.jpg'
        cv2.imwrite(osp.join(img_dir, file_name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        semantic = np.full((height, width), len(classes), np.uint8)
        for inst in instances:
            semantic[inst.mask > 0] = inst.label
        cv2.imwrite(osp.join(sem_dir, f'{i:06d}.png'), semantic)
        images.append(dict(id=i + 1, file_name=file_name, height=height, width=width))
        for inst in instances:
            polys = mask_to_polygons(inst.mask)
            if not polys:
                continue
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=inst.label + 1,
                bbox=mask_to_bbox(inst.mask), area=float(inst.mask.sum()), iscrowd=0,
                segmentation=polys))
    categories = [dict(id=k + 1, name=name, supercategory='shape')
                  for k, name in enumerate(classes)]
    return dict(info=dict(description=f'lsa synthetic shapes ({split})'), licenses=[],
                images=images, annotations=annotations, categories=categories)


def make_coco_instances(out_dir: str, num_train: int = 64, num_val: int = 16, seed: int = 0,
                        size: tuple[int, int] = (128, 128),
                        classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
                        max_objects: int = 3) -> dict:
    """Write the synthetic COCO dataset and return what a config needs.

    Args:
        out_dir: Root folder (created).
        num_train: Training images.
        num_val: Validation images.
        seed: Seed; the same arguments always give byte-identical files.
        size: Image (height, width); mmdet's default ``min_size=32`` filter needs >= 32.
        classes: Shape classes (names from :data:`lsa.datasets.shapes.SHAPES`).
        max_objects: Most objects per image (at least one is drawn).

    Returns:
        ``dict(data_root, classes, train_ann, val_ann, train_img, val_img, train_seg,
        val_seg)`` with the annotation/image/semantic paths relative to ``data_root``.
    """
    classes = check_classes(classes, 'make_coco_instances')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'make_coco_instances: num_train and num_val must be >= 1, '
                         f'got {num_train}, {num_val}')
    if min(size) < 32:
        raise ValueError(f'make_coco_instances: size must be >= 32 px per side, got {size}')
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    # Independent streams per split so num_train does not change the val set.
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    for split, num, rng in (('train', num_train, train_rng), ('val', num_val, val_rng)):
        coco = _coco_split(rng, out_dir, split, num, tuple(size), classes, max_objects)
        with open(osp.join(out_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    return dict(data_root=out_dir, classes=classes,
                train_ann='annotations/instances_train.json',
                val_ann='annotations/instances_val.json', train_img='train/', val_img='val/',
                train_seg='semantic/train/', val_seg='semantic/val/')
