"""elsa_ref against a brute-force loop statement of the ELSA op (tiny fp64 inputs)."""
import pytest
import torch

from lsa.ops.reference import elsa_ref


def elsa_loops(v, a, m, g, k, s, d):
    """The op written index by index: zero padding, output H//s x W//s."""
    nb, cg, h, w = v.shape
    m = m.expand(nb, cg, k, k)
    g = g.expand(nb, cg, k, k)
    r = k // 2
    out = torch.zeros(nb, cg, h // s, w // s, dtype=v.dtype)
    for n in range(nb):
        for c in range(cg):
            for y in range(h // s):
                for x in range(w // s):
                    acc = 0.0
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = y * s + (ky - r) * d, x * s + (kx - r) * d
                            if 0 <= iy < h and 0 <= ix < w:
                                f = a[n, ky * k + kx, y, x] * m[n, c, ky, kx] + g[n, c, ky, kx]
                                acc += float(v[n, c, iy, ix] * f)
                    out[n, c, y, x] = acc
    return out


@pytest.mark.parametrize('nb,cg,h,w,k,s,d', [
    (2, 3, 5, 6, 3, 1, 1),
    (1, 2, 7, 5, 3, 2, 1),
    (1, 2, 6, 7, 3, 1, 2),
    (1, 2, 7, 8, 5, 2, 2),
    (1, 1, 9, 8, 7, 1, 1),
    (1, 2, 3, 2, 5, 1, 1),   # window larger than the image
])
def test_elsa_ref_matches_loops(nb, cg, h, w, k, s, d):
    dt = torch.float64
    v = torch.randn(nb, cg, h, w, dtype=dt)
    a = torch.randn(nb, k * k, h // s, w // s, dtype=dt)
    m = torch.randn(nb, cg, k, k, dtype=dt)
    g = torch.randn(nb, cg, k, k, dtype=dt)
    torch.testing.assert_close(elsa_ref(v, a, m, g, k, s, d), elsa_loops(v, a, m, g, k, s, d),
                               rtol=1e-12, atol=1e-12)


def test_elsa_ref_broadcast_ghosts():
    v = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    a = torch.randn(2, 9, 6, 5, dtype=torch.float64)
    m = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    g = torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(elsa_ref(v, a, m, g, 3), elsa_loops(v, a, m, g, 3, 1, 1),
                               rtol=1e-12, atol=1e-12)


def test_elsa_ref_lam0_is_attention_plus_depthwise_conv():
    """ELSA-Swin's case (ghost_mul = 1): local attention + depthwise conv of the ghost head."""
    nb, cg, h, w, k = 2, 4, 7, 6, 5
    v = torch.randn(nb, cg, h, w, dtype=torch.float64)
    a = torch.randn(nb, k * k, h, w, dtype=torch.float64)
    g = torch.randn(1, cg, k, k, dtype=torch.float64)
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    zero = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    conv = torch.nn.functional.conv2d(v, g.view(cg, 1, k, k), padding=k // 2, groups=cg)
    torch.testing.assert_close(elsa_ref(v, a, one, g, k),
                               elsa_ref(v, a, one, zero, k) + conv, rtol=1e-12, atol=1e-12)
