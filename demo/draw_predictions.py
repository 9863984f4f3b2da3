"""Draw a trained detector's predictions beside the ground truth for several validation images.

::

    python demo/draw_predictions.py CONFIG CHECKPOINT --out-file OUT.png [--num 6] [--score-thr 0.5]

Each row is one image of the config's test set: ground truth on the left, the model's
boxes, masks, class names and scores on the right (mmdet's ``DetLocalVisualizer``).
Images are upscaled before drawing so that labels stay readable on small inputs. The
checkpoint is loaded without running code from it (``--trust-checkpoint`` lifts that for this
file) and must fill every weight of the model (``--allow-partial`` to draw anyway).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw ground truth beside predictions for validation images')
    parser.add_argument('config', help='mmdet config file (its test_dataloader gives the images)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', required=True, help='where to write the PNG')
    parser.add_argument('--num', type=int, default=6, help='number of images (rows)')
    parser.add_argument('--score-thr', type=float, default=0.5, help='prediction score threshold')
    parser.add_argument('--scale', type=float, default=3.0, help='upscaling before drawing')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load the checkpoint even if it needs types outside the safe '
                        'allowlist; unpickling it may run code stored in it')
    parser.add_argument('--allow-partial', action='store_true',
                        help='draw even if the checkpoint leaves some weights unloaded')
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f'--num must be >= 1, got {args.num}')
    if not 0.0 <= args.score_thr <= 1.0:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.scale < 1.0:
        parser.error(f'--scale must be >= 1, got {args.scale}')
    return args


def _upscale(image: np.ndarray, sample, scale: float):
    """Resize an (H, W, 3) image and the sample's gt/pred boxes and masks by ``scale``."""
    import mmcv
    import torch.nn.functional as F
    from mmdet.structures.mask import BitmapMasks

    h, w = image.shape[:2]
    size = (round(h * scale), round(w * scale))
    image = mmcv.imresize(image, size[::-1])
    sample = sample.clone()
    gt = sample.gt_instances
    gt.bboxes = gt.bboxes * scale
    if 'masks' in gt:
        gt.masks = BitmapMasks(gt.masks.to_ndarray(), h, w).resize(size)
    pred = sample.pred_instances
    pred.bboxes = pred.bboxes * scale
    if 'masks' in pred and len(pred.masks):
        pred.masks = F.interpolate(pred.masks[:, None].float(), size=size)[:, 0] > 0.5
    return image, sample


def _header(width: int, titles: tuple[str, ...], height: int = 32) -> np.ndarray:
    """A white (height, width, 3) strip with ``titles`` centred over equal columns."""
    import cv2

    strip = np.full((height, width, 3), 255, np.uint8)
    col = width // len(titles)
    for i, title in enumerate(titles):
        (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
        cv2.putText(strip, title, (i * col + (col - tw) // 2, (height + th) // 2),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    return strip


def main(argv: list[str] | None = None) -> np.ndarray:
    from lsa.compat import apply
    apply()  # before any toolbox import
    from lsa.apis.checkpoint_loading import trust_checkpoint
    from lsa.apis.cli import exit_on, load_errors
    from lsa.apis.inference import init_inference_model

    args = parse_args(argv)
    import mmcv
    from mmdet.registry import DATASETS, VISUALIZERS
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    with exit_on(*load_errors(), FileNotFoundError):
        model = init_inference_model('mmdet', args.config, args.checkpoint, 'cpu',
                                     args.allow_partial)
    cfg = model.cfg
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo

    rows = []
    for idx in range(min(args.num, len(dataset))):
        data = dataset[idx]
        with torch.no_grad():
            (sample, ) = model.test_step(pseudo_collate([data]))
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        image, sample = _upscale(image, sample, args.scale)
        visualizer.add_datasample('row', image, data_sample=sample, draw_gt=True,
                                  draw_pred=True, show=False, pred_score_thr=args.score_thr)
        rows.append(visualizer.get_image())
    width = max(r.shape[1] for r in rows)
    header = _header(width, ('ground truth', f'prediction (score >= {args.score_thr:g})'))
    grid = np.concatenate([header] + [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)),
                                             constant_values=255) for r in rows])
    mmcv.imwrite(mmcv.rgb2bgr(grid), args.out_file)
    print(f'wrote {args.out_file} ({len(rows)} images: ground truth left, prediction right)')
    return grid


if __name__ == '__main__':
    main()
