"""lsa: local self-attention backbones (SAN, LESA, ELSA, LocalViT) for OpenMMLab.

The core (``lsa``, ``lsa.ops``, ``lsa.models``) needs only torch and mmengine;
mmcv, mmdet, mmseg and mmpretrain are used by the configs and tools alone.
"""
from . import compat  # noqa: F401  (first: fixes for the frozen OpenMMLab stack)
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
