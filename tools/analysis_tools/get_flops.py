"""FLOPs and parameters of the model of any lsa config (cls, det or seg).

Counts with mmengine's ``FlopAnalyzer`` plus lsa's handles for the attention ops,
``scaled_dot_product_attention``, matmul and mmcv's DCN (:mod:`lsa.analysis.flops`),
on one (1, 3, H, W) input::

    python tools/analysis_tools/get_flops.py configs/det/mask_rcnn_lesa_r50.py --shape 800 1280

Detectors run backbone, neck, the RPN head's convolutions and the RoI heads (no
post-processing) on a fixed set of ``test_cfg.rpn.max_per_img`` proposals (1000 in every lsa
config), so the count does not depend on what a randomly initialised RPN proposes; the RoI
heads count as in mmdet 2.x's ``forward_dummy`` (under which the Swin-T baselines give the
Swin READMEs' figures, docs/analysis.md): box heads on every proposal, mask heads on the
first 100. Segmentors run ``_forward`` (backbone and decode head, no auxiliary head),
classifiers ``forward(mode='tensor')``. ``--by-part`` splits the count over the model's
top-level parts (backbone, neck, heads).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

from lsa.analysis import SAN_COUNTER_HANDLES, complexity_info
from lsa.apis.runner_config import toolbox_of
from lsa.compat import apply as apply_compat

#: H, W per toolbox: 800x1280 for COCO detectors and 512x2048 for ADE20K segmentors (the sizes at
#: which the Swin-T baselines give the Swin READMEs' 267G / 945G, docs/analysis.md), 224x224 for
#: ImageNet classifiers.
DEFAULT_SHAPE = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}
#: RoIs the mask heads see (mmdet 2.x's ``forward_dummy``: ``rois[:100]``).
MASK_ROIS = 100


class _TensorForward(nn.Module):
    """Wraps a toolbox model so that ``forward(x)`` runs its plain tensor path."""

    def __init__(self, model: nn.Module, toolbox: str) -> None:
        super().__init__()
        self.model = model
        self.toolbox = toolbox

    def forward(self, x: torch.Tensor):
        if self.toolbox == 'mmpretrain':
            return self.model(x, mode='tensor')
        if self.toolbox == 'mmseg':
            return self.model._forward(x)
        from mmdet.structures import DetDataSample
        h, w = x.shape[-2:]
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
        samples = [DetDataSample(metainfo=meta)]
        if not (getattr(self.model, 'with_rpn', False) and self.model.with_roi_head):
            return self.model._forward(x, samples)
        feats = self.model.extract_feat(x)
        rpn_outs = self.model.rpn_head(feats)
        proposals = fixed_proposals(self.model.test_cfg.rpn.max_per_img, h, w, x.device)
        return rpn_outs, roi_heads_forward(self.model.roi_head, feats, proposals, samples)


def roi_heads_forward(roi_head: nn.Module, feats: tuple, proposals, samples: list) -> tuple:
    """The RoI heads on ``proposals`` as mmdet 2.x's ``forward_dummy`` runs them: box heads on
    every proposal, mask heads on the first :data:`MASK_ROIS`.

    mmdet 3's ``forward`` does this for Mask R-CNN; for Cascade Mask R-CNN and HTC it runs
    every mask head on every proposal (3 x 1000 instead of 3 x 100 RoIs), so their stages are
    run here one by one. Every output is returned: the trace drops what no output uses.
    """
    from mmdet.models.roi_heads import CascadeRoIHead, HybridTaskCascadeRoIHead
    from mmdet.structures.bbox import bbox2roi
    if not isinstance(roi_head, CascadeRoIHead):
        return roi_head.forward(feats, [proposals], samples)
    htc = isinstance(roi_head, HybridTaskCascadeRoIHead)
    outs, semantic = (), None
    if htc and roi_head.with_semantic:
        outs = tuple(roi_head.semantic_head(feats))  # (segmentation logits, semantic features)
        semantic = outs[1]
    rois = bbox2roi([proposals.bboxes])
    for i in range(roi_head.num_stages):
        box = (roi_head._bbox_forward(i, feats, rois, semantic) if htc
               else roi_head._bbox_forward(i, feats, rois))
        outs += (box['cls_score'], box['bbox_pred'])
    if not roi_head.with_mask:
        return outs
    rois = rois[:MASK_ROIS]
    if not htc:
        return outs + tuple(roi_head._mask_forward(i, feats, rois)['mask_preds']
                            for i in range(roi_head.num_stages))
    # HTC: the last stage's RoI features (+ semantic features) through every mask head, each
    # passing its features on (mask information flow), as mmdet 2.x's HTC forward_dummy
    extractor = roi_head.mask_roi_extractor[-1]
    mask_feats = extractor(feats[:extractor.num_inputs], rois)
    if semantic is not None and 'mask' in roi_head.semantic_fusion:
        mask_feats = mask_feats + roi_head.semantic_roi_extractor([semantic], rois)
    last = None
    for head in roi_head.mask_head:
        if roi_head.mask_info_flow:
            pred, last = head(mask_feats, last)
        else:
            pred = head(mask_feats)
        outs += (pred,)
    return outs


def fixed_proposals(num: int, h: int, w: int, device: torch.device):
    """``num`` proposals spread over an ``h`` x ``w`` image (their places do not change the
    count: RoIAlign is not counted, every RoI costs the heads the same)."""
    from mmengine.structures import InstanceData
    t = torch.linspace(0, 1, num, device=device)
    x1, y1 = t * (w - 64), (t * 7919) % 1 * (h - 64)  # a scatter, not one diagonal line
    bboxes = torch.stack([x1, y1, x1 + 64, y1 + 64], dim=1)
    return InstanceData(bboxes=bboxes, scores=torch.ones(num, device=device))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='FLOPs and params of a config\'s model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', metavar='S',
                        help='input H W (or one size for both); default per toolbox')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    parser.add_argument('--san-counter', action='store_true',
                        help='also count ReLU, max pooling and conv biases, as the SAN authors\' '
                             'counter does (reproduces the SAN README FLOPs)')
    parser.add_argument('--show-arch', action='store_true', help='print the per-module table')
    parser.add_argument('--by-part', action='store_true',
                        help='print the exact count of each top-level part (backbone, neck, heads)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    apply_compat()  # before any toolbox import
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    toolbox = toolbox_of(cfg)
    init_default_scope(toolbox)
    if args.shape is None:
        h, w = DEFAULT_SHAPE[toolbox]
    elif len(args.shape) in (1, 2):
        h, w = (args.shape * 2)[:2]
    else:
        raise ValueError(f'--shape takes H W or one size, got {args.shape}')
    model = MODELS.build(cfg.model)
    model.eval()
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        info = complexity_info(_TensorForward(model, toolbox), (x,), show_table=args.show_arch,
                               extra_handles=SAN_COUNTER_HANDLES if args.san_counter else None)
    split = '=' * 30
    print(f'{split}\nConfig: {args.config}\nInput shape: {(h, w)}\n'
          f'Flops: {info["flops_str"]} ({info["flops"]:,})\n'
          f'Params: {info["params_str"]} ({info["params"]:,})\n{split}')
    if args.show_arch:
        print(info['out_table'])
    if args.by_part:
        for part, flops in info['by_part'].items():
            print(f'  {part}: {flops:,}')
    uncounted = ', '.join(sorted(info['uncounted']))
    print('FLOPs count one multiply-add as one FLOP (element-wise ops, softmax and activations\n'
          f'are not counted). Traced ops without a FLOP handle: {uncounted or "none"}')
    return info


if __name__ == '__main__':
    main()
