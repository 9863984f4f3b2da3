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
from .elsa_swin import ELSASwin
from .lesa_resnet import LESAResNet
from .localvit import LocalViT
from .localvit_pvt import LocalViTPVT
from .localvit_swin import LocalViTSwin
from .localvit_t2t import LocalViTT2T
from .localvit_tnt import LocalViTTNT
from .san import SAN
from .swin import SwinHost

__all__ = ['BaseLSABackbone']
__all__ += ['LESAResNet']
__all__ += ['SAN']
__all__ += ['LocalViT', 'LocalViTPVT', 'LocalViTTNT', 'LocalViTSwin', 'LocalViTT2T']
__all__ += ['ELSASwin', 'SwinHost']
