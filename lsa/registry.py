"""lsa's registries: children of mmengine's roots, scope ``lsa``.

Anything registered here is buildable from an mmdet, mmseg or mmpretrain config
as ``type='lsa.ClassName'`` once ``lsa.models`` is importable (the
``locations`` make the first lookup import it), e.g.::

    custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)
    model = dict(backbone=dict(type='lsa.ELSASwin', arch='tiny'))
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry
from torch import nn

__all__ = ['HOOKS', 'MODELS', 'build_block']

#: Backbones and the papers' attention blocks / feed-forwards.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='lsa', locations=['lsa.models'])
#: Runner hooks (``type='lsa.AtomicCheckpointHook'``).
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='lsa', locations=['lsa.engine'])


def build_block(cfg: dict) -> nn.Module:
    """Build a block from ``cfg`` with bare type names resolved in scope ``lsa``.

    Backbones build their nested blocks (attention, feed-forward) through this, so
    ``attn_cfg=dict(type='LESAAttention')`` works inside an mmdet/mmseg/mmpretrain
    config as well as ``type='lsa.LESAAttention'``; a scoped name such as
    ``'mmdet.X'`` still reaches that toolbox.
    """
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('lsa'):
        return MODELS.build(cfg)
