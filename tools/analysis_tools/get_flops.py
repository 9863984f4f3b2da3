"""FLOPs and parameters of the model of any lsa config (cls, det or seg).

Counts with mmengine's ``FlopAnalyzer`` plus lsa's handles for the attention ops,
``scaled_dot_product_attention``, matmul and mmcv's DCN (:mod:`lsa.analysis.flops`),
on one (1, 3, H, W) input::

    python tools/analysis_tools/get_flops.py configs/det/mask_rcnn_lesa_r50.py --shape 800 1216

Detectors are measured through their ``_forward`` (backbone, neck, RPN and RoI heads on the
proposals, no post-processing), segmentors through ``_forward`` (backbone and decode head), and
classifiers through ``forward(mode='tensor')``.
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

DEFAULT_SHAPE = {'mmdet': (800, 1216), 'mmseg': (512, 512), 'mmpretrain': (224, 224)}


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
        return self.model._forward(x, [DetDataSample(metainfo=meta)])


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
          f'Flops: {info["flops_str"]}\nParams: {info["params_str"]}\n{split}')
    if args.show_arch:
        print(info['out_table'])
    uncounted = ', '.join(sorted(info['uncounted']))
    print('FLOPs count one multiply-add as one FLOP (element-wise ops, softmax and activations\n'
          f'are not counted). Traced ops without a FLOP handle: {uncounted or "none"}')
    return info


if __name__ == '__main__':
    main()
