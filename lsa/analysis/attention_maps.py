"""Record the attention weights lsa's attention layers use, and lay them out over the map.

:class:`AttentionRecorder` registers forward hooks on submodules the layers already
have, so no layer code changes and nothing runs when it is not used:

=========================  ==============================================================
layer                      recorded from
=========================  ==============================================================
``SANAttention``           output of ``gamma`` (pairwise: softmax over the taps, as the
                           layer does; patchwise: used as is) -> (N, Cw, K, H*W)
``ELSAAttention``          input of ``attn_drop`` -> (B*G, k*k, Ho, Wo) (the softmax is
                           taken out of the op while attached)
``ShiftWindowAttention``   input of ``attn_drop`` -> (B*nW, heads, N, N), plus the
                           layer's shift and padded size (from a forward pre-hook)
``LESAAttention``          context: output of ``logit_norm`` (summed over the terms and
                           softmaxed, as the layer does) -> (B, G, L, L); local term:
                           input of ``fuse`` = [u, b] and output of ``gate`` (g)
=========================  ==============================================================

:func:`pixel_map` turns one record into an (H, W) map of the weights one query pixel
gives to every pixel of the layer's input map (mean over heads / weight channels).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lsa.models.layers import ELSAAttention, LESAAttention, SANAttention, ShiftWindowAttention

__all__ = ['AttentionRecord', 'AttentionRecorder', 'pixel_map', 'local_share_map']

ATTENTION_TYPES = (SANAttention, ELSAAttention, ShiftWindowAttention, LESAAttention)


@dataclass
class AttentionRecord:
    """What one attention layer used in the last forward pass (sample 0 is drawn)."""

    kind: str  # 'san', 'elsa', 'window' or 'lesa'
    module: nn.Module
    hw: tuple[int, int] = (0, 0)  # size of the layer's input map
    weights: Tensor | None = None
    extra: dict = field(default_factory=dict)


class AttentionRecorder:
    """Context manager recording the attention of the chosen layers of ``model``.

    Args:
        model: Any module containing lsa attention layers.
        layers: Qualified module names to record; None records every attention layer.

    Example:
        >>> with AttentionRecorder(model.backbone) as rec:
        ...     model.backbone(img)
        >>> heat = pixel_map(rec.records['stages.0.blocks.0.attn'], 10, 12)
    """

    def __init__(self, model: nn.Module, layers: list[str] | None = None) -> None:
        found = {n: m for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)}
        if layers is not None:
            missing = [n for n in layers if n not in found]
            if missing:
                raise ValueError(f'not lsa attention layers of this model: {missing}; '
                                 f'attention layers are: {list(found)}')
            found = {n: found[n] for n in layers}
        if not found:
            raise ValueError('the model has no lsa attention layer '
                             f'({", ".join(t.__name__ for t in ATTENTION_TYPES)})')
        self.records: dict[str, AttentionRecord] = {}
        self._handles: list = []
        self._restore: list = []  # undo the per-layer changes that make the weights visible
        for name, module in found.items():
            self.records[name] = self._attach(module)

    # ------------------------------------------------------------------ hooks
    def _hook(self, module: nn.Module, fn, pre: bool = False, **kw) -> None:
        reg = module.register_forward_pre_hook if pre else module.register_forward_hook
        self._handles.append(reg(fn, **kw))

    def _attach(self, layer: nn.Module) -> AttentionRecord:
        if isinstance(layer, SANAttention):
            rec = AttentionRecord('san', layer)

            def san_pre(mod, args):
                rec.hw = tuple(args[0].shape[-2:])

            def san_gamma(mod, args, out):
                N, taps = out.shape[0], layer.kernel_size ** 2
                w = out.softmax(dim=2) if layer.sa_type == 'pairwise' else out
                rec.weights = w.detach().reshape(N, -1, taps, out.shape[-1])

            self._hook(layer, san_pre, pre=True)
            self._hook(layer.gamma, san_gamma)
            # the fused op computes the same weights without materialising them: record
            # through the unfused composition while attached
            fused, layer.fused = layer.fused, False
            self._restore.append(lambda: setattr(layer, 'fused', fused))
            return rec
        if isinstance(layer, (ELSAAttention, ShiftWindowAttention)):
            rec = AttentionRecord('elsa' if isinstance(layer, ELSAAttention) else 'window', layer)

            def token_pre(mod, args):
                rec.hw = tuple(args[1])
                if rec.kind == 'window':
                    H, W = rec.hw
                    ws = layer.window_size
                    shift = layer.shift_size
                    if min(H, W) <= ws and not layer.pad_small_map:
                        shift = 0
                    rec.extra = dict(shift=shift, padded=(H + (ws - H % ws) % ws,
                                                          W + (ws - W % ws) % ws))

            def attn_in(mod, args):
                rec.weights = args[0].detach()

            self._hook(layer, token_pre, pre=True)
            self._hook(layer.attn_drop, attn_in, pre=True)
            if rec.kind == 'elsa':  # the op's fused softmax never reaches attn_drop
                fuse, layer.fuse_softmax = layer.fuse_softmax, False
                self._restore.append(lambda: setattr(layer, 'fuse_softmax', fuse))
            return rec
        rec = AttentionRecord('lesa', layer)

        def lesa_pre(mod, args):
            rec.hw = tuple(args[0].shape[-2:])

        normed_sum = layer._normed_sum

        def lesa_logits(terms):  # the BatchNormed, group-summed logits the layer softmaxes
            logits, *batch_stats = normed_sum(terms)
            rec.weights = logits.softmax(dim=-1).detach()
            return (logits, *batch_stats)

        def lesa_terms(mod, args):
            # clone: ``fuse`` starts with an in-place ReLU
            rec.extra['unary'], rec.extra['binary'] = args[0].detach().clone().chunk(2, dim=1)

        def lesa_gate(mod, args, out):
            rec.extra['gate'] = torch.sigmoid(out).detach()

        self._hook(layer, lesa_pre, pre=True)
        layer._normed_sum = lesa_logits
        self._restore.append(lambda: delattr(layer, '_normed_sum'))
        self._hook(layer.fuse, lesa_terms, pre=True)
        self._hook(layer.gate, lesa_gate)
        return rec

    def remove(self) -> None:
        """Remove every hook and undo the layer changes (the records stay)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for undo in self._restore:
            undo()
        self._restore.clear()

    def __enter__(self) -> AttentionRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# ---------------------------------------------------------------------- layout
def _check_pixel(rec: AttentionRecord, y: int, x: int) -> None:
    H, W = rec.hw
    if rec.weights is None:
        raise ValueError(f'no attention recorded for this {rec.kind} layer: run a forward first')
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f'pixel ({y}, {x}) is outside the {H}x{W} map of the layer')


def _reflect(i: int, n: int) -> int:
    """Index after one reflection (``ReflectionPad2d``) of an n-long axis."""
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)


def pixel_map(rec: AttentionRecord, y: int, x: int) -> Tensor:
    """(H, W) weights query pixel ``(y, x)`` of sample 0 gives to each input-map pixel.

    Weights are averaged over heads (SAN: over weight channels). Taps that fall outside
    the map land where the layer reads them (SAN reflects; ELSA zero-pads, so they are
    dropped; Swin drops padded tokens).
    """
    _check_pixel(rec, y, x)
    H, W = rec.hw
    out = torch.zeros(H, W)
    mod = rec.module
    if rec.kind in ('san', 'elsa'):
        k, d = mod.kernel_size, mod.dilation
        if rec.kind == 'san':
            taps = rec.weights[0, :, :, y * W + x].float().mean(0)  # K
        else:
            G = mod.num_heads
            taps = rec.weights[:G, :, y, x].float().mean(0)  # sample 0 = first G rows
        r = k // 2
        for t in range(k * k):
            yy, xx = y + (t // k - r) * d, x + (t % k - r) * d
            if rec.kind == 'san':
                yy, xx = _reflect(yy, H), _reflect(xx, W)
            elif not (0 <= yy < H and 0 <= xx < W):
                continue
            out[yy, xx] += taps[t]
        return out
    if rec.kind == 'lesa':
        return rec.weights[0, :, y * W + x].float().mean(0).view(H, W)
    ws, shift = mod.window_size, rec.extra['shift']
    Hp, Wp = rec.extra['padded']
    ry, rx = (y - shift) % Hp, (x - shift) % Wp  # position in the rolled map
    win = (ry // ws) * (Wp // ws) + rx // ws  # window of sample 0
    row = rec.weights[win, :, (ry % ws) * ws + rx % ws].float().mean(0)  # N
    for t in range(ws * ws):
        oy = (ry // ws * ws + t // ws + shift) % Hp
        ox = (rx // ws * ws + t % ws + shift) % Wp
        if oy < H and ox < W:
            out[oy, ox] += row[t]
    return out


def local_share_map(rec: AttentionRecord) -> Tensor:
    """LESA: (H, W) share of the local term, ``|u| / (|u| + |g * b|)`` (channel means)."""
    if rec.kind != 'lesa' or 'gate' not in rec.extra:
        raise ValueError('local_share_map needs a recorded LESA layer')
    u, b, g = rec.extra['unary'][0], rec.extra['binary'][0], rec.extra['gate'][0]
    local, context = u.abs().mean(0), (g * b).abs().mean(0)
    return (local / (local + context).clamp_min(1e-12)).float()
