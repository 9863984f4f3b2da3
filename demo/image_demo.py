"""Run a trained model on one image and draw its predictions with the toolbox's visualizer.

::

    python demo/image_demo.py IMG CONFIG CHECKPOINT --out-file OUT.png [--score-thr 0.3]

Works for detection (boxes and masks), segmentation (class map overlay) and
classification (the predicted label), chosen by the config's ``default_scope``. The
checkpoint is loaded without running code from it (``--trust-checkpoint`` lifts that for this
file) and must fill every weight of the model (``--allow-partial`` to draw anyway).
"""
from __future__ import annotations

import argparse

import torch
from mmengine.config import Config

from lsa.apis.cli import exit_on, load_errors
from lsa.apis.inference import init_inference_model
from lsa.apis.runner_config import toolbox_of


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw a model\'s predictions on an image')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', required=True, help='where to write the drawing')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load the checkpoint even if it needs types outside the safe '
                        'allowlist; unpickling it may run code stored in it')
    parser.add_argument('--allow-partial', action='store_true',
                        help='draw even if the checkpoint leaves some weights unloaded')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--score-thr', type=float, default=0.3, help='det: box score threshold')
    parser.add_argument('--min-size', type=int, default=512,
                        help='draw on an image upscaled to at least this short side (small '
                        'images would be covered by the labels); 0 keeps the input size')
    return parser.parse_args(argv)


def _upscale(image, result, scale: float):
    """Resize the image and the (det or seg) predictions by ``scale`` for a readable drawing."""
    import mmcv
    import torch.nn.functional as F

    h, w = image.shape[:2]
    size = (round(h * scale), round(w * scale))
    image = mmcv.imresize(image, size[::-1])
    result = result.clone()
    if 'pred_instances' in result:
        inst = result.pred_instances
        inst.bboxes = inst.bboxes * scale
        if 'masks' in inst and len(inst.masks):
            inst.masks = F.interpolate(inst.masks[:, None].float(), size=size)[:, 0] > 0.5
    if 'pred_sem_seg' in result:
        seg = result.pred_sem_seg.data
        result.pred_sem_seg.data = F.interpolate(seg[None].float(), size=size)[0].to(seg.dtype)
    return image, result


def main(argv: list[str] | None = None):
    from lsa.compat import apply
    apply()  # before any toolbox import
    from lsa.apis.checkpoint_loading import trust_checkpoint

    args = parse_args(argv)
    import mmcv

    toolbox = toolbox_of(Config.fromfile(args.config))
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    with exit_on(*load_errors(), FileNotFoundError):
        model = init_inference_model(toolbox, args.config, args.checkpoint, args.device,
                                     args.allow_partial)
    image = mmcv.imread(args.img, channel_order='rgb')
    if toolbox == 'mmdet':
        from mmdet.apis import inference_detector
        from mmdet.registry import VISUALIZERS
        result = inference_detector(model, args.img)
        extra = dict(pred_score_thr=args.score_thr)
    elif toolbox == 'mmseg':
        from mmseg.apis import inference_model
        from mmseg.registry import VISUALIZERS
        result = inference_model(model, args.img)
        extra = dict(withLabels=True)
    else:
        from mmpretrain.apis import ImageClassificationInferencer
        from mmpretrain.registry import VISUALIZERS
        result = ImageClassificationInferencer(model, device=args.device)(
            args.img, return_datasamples=True)[0]
        extra = {}
    scale = args.min_size / min(image.shape[:2]) if args.min_size else 1.0
    if scale > 1 and toolbox != 'mmpretrain':
        image, result = _upscale(image, result, scale)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    if toolbox == 'mmpretrain':
        visualizer.visualize_cls(image, result, show=False, out_file=args.out_file)
    else:
        visualizer.add_datasample('result', image, data_sample=result, draw_gt=False,
                                  show=False, out_file=args.out_file, **extra)
    print(f'wrote {args.out_file}')
    return result


if __name__ == '__main__':
    main()
