"""Backbones: one class per model, shared by classification, detection and segmentation."""
from . import (  # noqa: F401
               base,
               elsa_swin,
               lesa_resnet,
               localvit,
               localvit_pvt,
               localvit_swin,
               localvit_t2t,
               localvit_tnt,
               san,
               swin,
)
from .base import BaseLSABackbone
from .localvit import LocalViT
from .localvit_pvt import LocalViTPVT
from .localvit_tnt import LocalViTTNT
from .san import SAN

__all__ = ['BaseLSABackbone']
__all__ += ['SAN']
__all__ += ['LocalViT', 'LocalViTPVT', 'LocalViTTNT']
