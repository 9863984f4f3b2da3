"""Draw the attention weights a model uses for chosen pixels and layers, in one PNG.

Works for every lsa attention layer (SAN pairwise/patchwise, ELSA, LESA, Swin window
attention) in the backbone of any lsa config (cls, det or seg)::

    python tools/analysis_tools/vis_attention.py IMG configs/cls/elsa/elsa-swin-t_8xb128_in1k.py \\
        --checkpoint elsa-swin-t_lsa.pth --pixels 60,80 150,120 --out attention.png

Rows are layers, columns the query pixels (in the resized image's coordinates). A LESA
layer gets two rows: its context attention, and the share of its local term
``|u| / (|u| + |g * b|)`` at every pixel. The weights are recorded by
:class:`lsa.analysis.attention_maps.AttentionRecorder` during one forward pass.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402
from PIL import Image  # noqa: E402

import lsa.compat_apply  # noqa: E402,F401  (lsa.compat.apply() before any toolbox import)
from lsa.analysis.attention_maps import AttentionRecorder, local_share_map, pixel_map  # noqa: E402
from lsa.apis.runner_config import toolbox_of  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw attention weights over an image')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', help='weights (random init if omitted)')
    parser.add_argument('--layers', nargs='+', help='backbone attention layers (module names); '
                        'default: the first one of each stage-like group, at most 4')
    parser.add_argument('--pixels', nargs='+', default=['112,112'], metavar='Y,X',
                        help='query pixels in the resized image')
    parser.add_argument('--size', type=int, nargs='+', default=[224], metavar='S',
                        help='input H W (or one size for both)')
    parser.add_argument('--out', default='attention.png', help='output PNG')
    return parser.parse_args(argv)


def load_backbone(config: str, checkpoint: str | None) -> tuple[torch.nn.Module, tuple, tuple]:
    """The config's backbone in eval mode, with its normalisation (mean, std)."""
    cfg = Config.fromfile(config)
    init_default_scope(toolbox_of(cfg))
    model = MODELS.build(cfg.model)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    pre = cfg.model.get('data_preprocessor') or {}
    mean, std = pre.get('mean', IMAGENET_MEAN), pre.get('std', IMAGENET_STD)
    backbone = getattr(model, 'backbone', model)
    return backbone.eval(), tuple(mean), tuple(std)


def default_layers(names: list[str], limit: int = 4) -> list[str]:
    """One layer per group (names sharing everything but the last two parts), at most ``limit``."""
    firsts: dict[str, str] = {}
    for n in names:
        firsts.setdefault(n.rsplit('.', 2)[0], n)
    picked = list(firsts.values())
    step = max(1, len(picked) // limit)
    return picked[::step][:limit]


def _parse_pixel(text: str, h: int, w: int) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.split(','))
    except ValueError as e:
        raise ValueError(f'--pixels takes Y,X pairs of ints, got {text!r}') from e
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f'pixel {text} is outside the {h}x{w} input')
    return y, x


def draw(image: np.ndarray, panels: list[tuple[str, list[tuple[np.ndarray, tuple | None]]]],
         out: str) -> None:
    """One row per panel: (title, [(heat (h, w) in [0, 1] at image size, marker yx or None)])."""
    cols = max(len(cells) for _, cells in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(2.6 * cols, 2.6 * len(panels)),
                             squeeze=False)
    for r, (title, cells) in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis('off')
            if c >= len(cells):
                continue
            heat, marker = cells[c]
            ax.imshow(image.mean(-1), cmap='gray', vmin=0, vmax=255)
            ax.imshow(heat, cmap='inferno', alpha=0.6, vmin=0, vmax=1)
            if marker is not None:
                ax.plot(marker[1], marker[0], marker='x', color='cyan', ms=7, mew=2)
            ax.set_title(title if marker is None else f'{title}\n@ {marker}', fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=72)
    plt.close(fig)


def _to_image(m: torch.Tensor, h: int, w: int, normalise: bool = True) -> np.ndarray:
    """(H, W) map -> (h, w) image (nearest), scaled to a maximum of 1 if ``normalise``."""
    up = F.interpolate(m[None, None].float(), size=(h, w), mode='nearest')[0, 0]
    return (up / up.max().clamp_min(1e-12) if normalise else up).numpy()


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if len(args.size) not in (1, 2):
        raise ValueError(f'--size takes H W or one size, got {args.size}')
    h, w = (args.size * 2)[:2]
    backbone, mean, std = load_backbone(args.config, args.checkpoint)
    image = np.asarray(Image.open(args.image).convert('RGB').resize((w, h), Image.BILINEAR))
    pixels = [_parse_pixel(p, h, w) for p in args.pixels]
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with AttentionRecorder(backbone) as probe:
        names = list(probe.records)
    layers = args.layers or default_layers(names)
    with AttentionRecorder(backbone, layers) as rec, torch.no_grad():
        backbone(x)
    panels = []
    for name in layers:
        r = rec.records[name]
        H, W = r.hw
        cells = []
        for py, px in pixels:
            heat = pixel_map(r, py * H // h, px * W // w)
            cells.append((_to_image(heat, h, w), (py, px)))
        label = f'{r.kind}' + (f'-{r.module.sa_type}' if r.kind == 'san' else '')
        panels.append((f'{name} ({label}, {H}x{W})', cells))
        if r.kind == 'lesa':
            panels.append((f'{name} local share', [(_to_image(local_share_map(r), h, w, normalise=False), None)]))
    draw(image, panels, args.out)
    print(f'wrote {args.out}: {len(panels)} rows x {len(pixels)} pixels')
    return args.out


if __name__ == '__main__':
    main()
