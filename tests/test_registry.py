"""One module registered in lsa is buildable from all three toolbox scopes as 'lsa.X'."""
import subprocess
import sys
import textwrap

import pytest

from lsa.registry import MODELS


def test_lsa_registry_is_a_scoped_child_of_mmengine():
    from mmengine.registry import MODELS as ROOT
    assert MODELS.scope == 'lsa'
    assert MODELS.parent is ROOT
    assert ROOT._search_child('lsa') is MODELS


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg', 'mmpretrain'])
def test_build_lsa_module_from_toolbox_scope(toolbox):
    """A fresh interpreter: the toolbox config's custom_imports brings lsa in."""
    pytest.importorskip(toolbox)
    code = f"""
        import lsa.compat_apply  # compat first, as tools/train.py does
        from mmengine.config import Config
        from mmengine.registry import DefaultScope, init_default_scope
        from mmengine.utils import import_modules_from_strings
        from {toolbox}.registry import MODELS
        cfg = Config(dict(default_scope={toolbox!r},
                          custom_imports=dict(imports=['lsa.models'], allow_failed_imports=False)))
        import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.default_scope)
        m = MODELS.build(dict(type='lsa.Mlp', in_features=8, hidden_features=16))
        assert type(m).__module__ == 'lsa.models.layers.common', type(m)
        assert DefaultScope.get_current_instance().scope_name == {toolbox!r}
        print('ok', type(m).__name__)
    """
    res = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'ok Mlp' in res.stdout


def test_lsa_scope_locations_import_models_on_first_use():
    """Without importing lsa.models explicitly, a lookup in scope lsa imports it."""
    code = """
        from lsa.registry import MODELS
        assert MODELS.get('Mlp') is not None
        import sys; assert 'lsa.models' in sys.modules
    """
    res = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_nested_blocks_resolve_in_lsa_under_a_toolbox_scope():
    """attn_cfg=dict(type='LESAAttention') (no 'lsa.') works inside an mmdet config."""
    pytest.importorskip('mmdet')
    code = """
        import lsa.compat_apply
        from mmengine.registry import init_default_scope
        init_default_scope('mmdet')
        from mmdet.registry import MODELS
        m = MODELS.build(dict(type='lsa.LESAResNet', form='det',
                              arch=dict(base_channels=16, stage_blocks=(1, 1, 2, 2), widen_factor=1),
                              attn_cfg=dict(type='LESAAttention')))
        assert type(m.layer3[1].conv2).__name__ == 'LESAAttention'
        m = MODELS.build(dict(type='lsa.ELSASwin', arch='tiny',
                              attn_cfgs=dict(type='ShiftWindowAttention', window_size=7)))
        assert type(m.stages[0].blocks[0].attn).__name__ == 'ShiftWindowAttention'
        from mmengine.registry import DefaultScope
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
    """
    res = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
