"""Deterministic synthetic datasets (numpy + cv2 only) for the demo, CI and docs."""
from .ade20k import make_ade20k
from .cls_folder import make_cls_folder
from .coco import make_coco_instances
from .shapes import SHAPES, render_scene

__all__ = ['SHAPES', 'make_ade20k', 'make_cls_folder', 'make_coco_instances', 'render_scene']
