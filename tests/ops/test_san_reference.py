"""The SAN references (lsa.ops.reference.san) against brute-force Python loops.

The loops restate the official index math (spec A1-A3) independently: tap
(th, tw) of output (h, w) reads input (-p + h*s + th*d, -p + w*s + tw*d), mapped once
by the reflection ``i < 0 -> -i; i >= L -> 2(L-1) - i`` or skipped (zeros).
"""
import pytest
import torch

from lsa.ops.reference import aggregation_ref, subtraction2_ref, subtraction_ref

# (kernel, stride, padding, dilation, pad_mode, H, W, C, Cw)
CASES = [
    (3, 1, 1, 1, 'zeros', 5, 6, 4, 2),
    (3, 1, 1, 1, 'reflect', 5, 6, 4, 4),
    (5, 2, 2, 1, 'reflect', 7, 6, 6, 3),
    (3, 2, 2, 2, 'zeros', 6, 7, 4, 1),
    (3, 1, 2, 2, 'reflect', 5, 5, 2, 2),
    ((3, 5), (1, 2), (1, 2), 1, 'reflect', 5, 7, 4, 2),
    (3, 1, 0, 1, 'zeros', 5, 4, 2, 1),      # no padding, output smaller
    (3, 1, 2, 1, 'zeros', 4, 5, 2, 2),      # padding > (k-1)/2: centre reads padding
]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _src(i, length, mode):
    if 0 <= i < length:
        return i
    if mode == 'zeros':
        return None
    if i < 0:
        i = -i
    if i >= length:
        i = 2 * (length - 1) - i
    return i


def _read(x, n, c, i, j, mode):
    si, sj = _src(i, x.shape[2], mode), _src(j, x.shape[3], mode)
    return 0.0 if si is None or sj is None else x[n, c, si, sj]


def _geom(k, s, p, d, H, W):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (k, s, p, d))
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo


def aggregation_loops(x, wt, k, s, p, d, mode):
    N, C, H, W = x.shape
    Cw = wt.shape[1]
    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = _geom(k, s, p, d, H, W)
    y = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(C)] for _ in range(N)]
    for n in range(N):
        for c in range(C):
            for h in range(Ho):
                for w in range(Wo):
                    acc = 0.0
                    for th in range(kh):
                        for tw in range(kw):
                            v = _read(x, n, c, -ph + h * sh + th * dh, -pw + w * sw + tw * dw,
                                      mode)
                            acc = acc + wt[n, c % Cw, th * kw + tw, h * Wo + w] * v
                    y[n][c][h][w] = acc
    return torch.stack([torch.stack([torch.stack([torch.stack([torch.as_tensor(v) for v in r])
                                                  for r in ch]) for ch in img]) for img in y])


def subtraction2_loops(x1, x2, k, s, p, d, mode):
    N, C, H, W = x1.shape
    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = _geom(k, s, p, d, H, W)
    y = torch.zeros(N, C, kh * kw, Ho * Wo, dtype=x1.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(Ho):
                for w in range(Wo):
                    centre = _read(x1, n, c, -ph + h * sh + (kh - 1) // 2 * dh,
                                   -pw + w * sw + (kw - 1) // 2 * dw, mode)
                    for th in range(kh):
                        for tw in range(kw):
                            y[n, c, th * kw + tw, h * Wo + w] = centre - _read(
                                x2, n, c, -ph + h * sh + th * dh, -pw + w * sw + tw * dw, mode)
    return y


@pytest.mark.parametrize('k,s,p,d,mode,H,W,C,Cw', CASES)
def test_aggregation_ref_matches_loops(k, s, p, d, mode, H, W, C, Cw):
    kh, kw, *_, Ho, Wo = _geom(k, s, p, d, H, W)
    x = torch.randn(2, C, H, W, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(2, Cw, kh * kw, Ho * Wo, dtype=torch.float64, requires_grad=True)
    ref = aggregation_ref(x, wt, k, s, p, d, mode)
    loops = aggregation_loops(x, wt, k, s, p, d, mode)
    assert ref.shape == (2, C, Ho, Wo)
    torch.testing.assert_close(ref, loops, rtol=0, atol=1e-12)
    # the gradients of the two (autograd through unfold vs through the loops) agree too
    g = torch.randn_like(ref)
    gr = torch.autograd.grad(ref, (x, wt), g)
    gl = torch.autograd.grad(loops, (x, wt), g)
    for a, b in zip(gr, gl):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize('k,s,p,d,mode,H,W,C,Cw', CASES)
def test_subtraction2_ref_matches_loops(k, s, p, d, mode, H, W, C, Cw):
    x1 = torch.randn(2, C, H, W, dtype=torch.float64)
    x2 = torch.randn(2, C, H, W, dtype=torch.float64)
    ref = subtraction2_ref(x1, x2, k, s, p, d, mode)
    torch.testing.assert_close(ref, subtraction2_loops(x1, x2, k, s, p, d, mode), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(subtraction_ref(x1, k, s, p, d, mode),
                               subtraction2_loops(x1, x1, k, s, p, d, mode), rtol=0, atol=1e-12)


def test_aggregation_channel_sharing_is_interleaved():
    """Channel c uses weight channel c % Cw (not c // (C / Cw))."""
    x = torch.zeros(1, 4, 3, 3, dtype=torch.float64)
    x[0, 1] = 1.0  # only channel 1 is non-zero
    wt = torch.zeros(1, 2, 9, 9, dtype=torch.float64)
    wt[0, 1] = 1.0  # weight channel 1 sums the window, weight channel 0 is 0
    y = aggregation_ref(x, wt, 3, padding=1)
    assert y[0, 1, 1, 1] == 9.0 and y[0, 1, 0, 0] == 4.0  # zero padding at the corner
    assert y[0, [0, 2, 3]].abs().sum() == 0


def test_subtraction_reflect_uses_reflected_pixel():
    """With SAN's padding the centre is (h, w) and a border neighbour is the reflection."""
    x = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)
    y = subtraction_ref(x, 3, padding=1, pad_mode='reflect').view(3, 3, 3, 4)
    # output (0, 0): centre x[0, 0] = 0; tap (0, 0) reads (-1, -1) -> (1, 1) = 5
    assert y[0, 0, 0, 0] == -5.0
    # tap (2, 2) of output (2, 3) reads (3, 4) -> (1, 2) = 6; centre x[2, 3] = 11
    assert y[2, 2, 2, 3] == 5.0
