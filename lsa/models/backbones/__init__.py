"""Backbones: one class per model, shared by classification, detection and segmentation."""
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

__all__ = [
    'BaseLSABackbone', 'ELSASwin', 'LESAResNet', 'LocalViT', 'LocalViTPVT', 'LocalViTSwin',
    'LocalViTT2T', 'LocalViTTNT', 'SAN', 'SwinHost',
]
