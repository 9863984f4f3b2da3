"""The transformer weight initialisation every lsa transformer host uses."""
from __future__ import annotations

import torch.nn as nn


def init_vit_weights(m: nn.Module) -> None:
    """timm/ViT/Swin init, for ``model.apply``: Linear trunc_normal(std .02) with zero bias,
    LayerNorm (1, 0); other modules untouched."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
