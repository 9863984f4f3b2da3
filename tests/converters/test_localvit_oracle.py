"""LocalViT converter against an oracle that does not use the converter's tables.

The official locality feed-forward is rebuilt here from the spec (ofsoundof/LocalViT
``models/localvit.py``, spec B1-B2): ``conv`` = Sequential[1x1 conv, BN, act, 3x3 dw conv,
BN, act, (SE | ECA), 1x1 conv, BN] and ``forward = x + conv(x)``, with the official
Sequential indices as parameter names. A randomised official block (BN statistics included)
is written in the official key layout of a LocalViT-T classifier block, converted with
``convert_localvit``, loaded strictly into lsa's ``LocalityFeedForward``, and both are
compared by their outputs, so a wrong index or SE name in the converter fails here.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lsa.models  # noqa: F401
from lsa.converters.localvit import convert_localvit
from lsa.models.layers.locality_ffn import LocalityFeedForward


class OfficialHSigmoid(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3) / 6


class OfficialHSwish(nn.Module):
    def forward(self, x):
        return x * OfficialHSigmoid()(x)


class OfficialSE(nn.Module):
    """``avg_pool`` -> ``fc`` = Sequential[Linear(C, C // r), ReLU, Linear, h_sigmoid]."""

    def __init__(self, channel, reduction):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction), nn.ReLU(),
                                nn.Linear(channel // reduction, channel), OfficialHSigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class OfficialECA(nn.Module):
    """``conv`` = Conv1d(1, 1, k) across the pooled channels, sigmoid or h_sigmoid gate."""

    def __init__(self, channel, sigmoid):
        super().__init__()
        t = int(abs((math.log(channel, 2) + 1) / 2))
        k = t if t % 2 else t + 1
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = nn.Sigmoid() if sigmoid else OfficialHSigmoid()

    def forward(self, x):
        y = self.avg_pool(x).squeeze(-1).transpose(-1, -2)  # B, 1, C
        y = self.conv(y).transpose(-1, -2).unsqueeze(-1)  # B, C, 1, 1
        return x * self.gate(y)


class OfficialLFF(nn.Module):
    def __init__(self, dim, hidden, act, reduction):
        super().__init__()
        make_act = OfficialHSwish if 'hs' in act else nn.ReLU6
        layers = [nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), make_act(),
                  nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
                  nn.BatchNorm2d(hidden), make_act()]
        if '+' in act:
            attn = act.split('+')[1]
            layers.append(OfficialSE(hidden, reduction) if attn == 'se'
                          else OfficialECA(hidden, sigmoid=attn == 'eca'))
        layers += [nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x)


@pytest.mark.parametrize('act,reduction', [('hs+se', 48), ('hs+se', 1), ('hs', 4),
                                           ('relu6', 4), ('hs+eca', 4), ('hs+ecah', 4)])
def test_converted_lff_equals_the_official_block(act, reduction):
    torch.manual_seed(0)
    dim, hidden = 16, 64
    official = OfficialLFF(dim, hidden, act, reduction).double()
    with torch.no_grad():
        for p in official.parameters():
            p.normal_(0, 0.3)
        for m in official.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    official.eval()
    # official key layout of block 0 of a LocalViT-T classifier: blocks.0.conv.conv.<i>.*
    sd = {f'blocks.0.conv.{k}': v for k, v in official.state_dict().items()}
    out = convert_localvit(sd)
    prefix = 'backbone.blocks.0.ffn.'
    assert all(k.startswith(prefix) for k in out), sorted(out)
    ours = LocalityFeedForward(dim, hidden, act=act, reduction=reduction, residual=True)
    ours.double().eval()
    ours.load_state_dict({k[len(prefix):]: v for k, v in out.items()}, strict=True)
    x = torch.randn(2, dim, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=1e-13, atol=1e-13)


def test_one_naming_scheme_with_aliases():
    from lsa.converters import elsa, lesa, localvit, san
    assert elsa.convert_elsa is elsa.convert_elsa_checkpoint
    assert elsa.infer_arch is elsa.infer_elsa_arch
    assert lesa.convert_lesa is lesa.convert_lesa_checkpoint
    assert lesa.infer_lesa_config is lesa.infer_lesa_arch
    assert san.convert_san is san.convert_san_checkpoint and callable(san.infer_san_arch)
    assert localvit.convert_checkpoint is localvit.convert_localvit_checkpoint
    assert localvit.detect_arch is localvit.infer_localvit_arch
