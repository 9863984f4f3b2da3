"""lsa's registries: children of mmengine's roots, scope ``lsa``.

Anything registered here is buildable from an mmdet, mmseg or mmpretrain config
as ``type='lsa.ClassName'`` once ``lsa.models`` is importable (the
``locations`` make the first lookup import it), e.g.::

    custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
    model = dict(backbone=dict(type='lsa.ELSASwin', arch='tiny'))
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

__all__ = ['MODELS']

#: Backbones and the papers' attention blocks / feed-forwards.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='lsa', locations=['lsa.models'])
