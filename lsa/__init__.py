"""lsa: local self-attention backbones (SAN, LESA, ELSA, LocalViT) for OpenMMLab.

The core (``lsa``, ``lsa.ops``, ``lsa.models``) needs only torch and mmengine;
mmcv, mmdet, mmseg and mmpretrain are used by the configs and tools alone. Importing lsa
changes nothing outside it: the fixes for the frozen OpenMMLab stack are applied by the
tools, or explicitly with :func:`lsa.compat.apply` (``custom_imports=['lsa.compat_apply']``).
"""
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
