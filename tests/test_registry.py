"""One module registered in lsa is buildable from all three toolbox scopes as 'lsa.X'.

The scope checks need an interpreter where nothing has been imported yet (this one has
lsa.models and the toolboxes loaded by other tests), so they run as one fresh interpreter,
step by step in the order a user meets them: a bare ``lsa.registry`` lookup first, then each
toolbox's config with ``custom_imports``. One interpreter, not one per check: each start with
a toolbox costs ~10 s.
"""
import importlib.util
import subprocess
import sys
import textwrap

from lsa.registry import MODELS

TOOLBOXES = [t for t in ('mmdet', 'mmseg', 'mmpretrain') if importlib.util.find_spec(t)]

FRESH_INTERPRETER = """
    import sys

    # 1. without importing lsa.models explicitly, a lookup in scope lsa imports it
    from lsa.registry import MODELS as LSA_MODELS
    assert 'lsa.models' not in sys.modules
    assert LSA_MODELS.get('Mlp') is not None
    assert 'lsa.models' in sys.modules
    print('step lazy-import ok')

    import lsa.compat_apply  # compat before any toolbox, as tools/train.py does
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, init_default_scope
    from mmengine.utils import import_modules_from_strings

    # 2. each toolbox config's custom_imports brings lsa in; 'lsa.X' builds in its scope
    for toolbox in sys.argv[1:]:
        MODELS = __import__(f'{toolbox}.registry', fromlist=['MODELS']).MODELS
        cfg = Config(dict(default_scope=toolbox,
                          custom_imports=dict(imports=['lsa.models'], allow_failed_imports=False)))
        import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.default_scope)
        m = MODELS.build(dict(type='lsa.Mlp', in_features=8, hidden_features=16))
        assert type(m).__module__ == 'lsa.models.layers.common', type(m)
        assert DefaultScope.get_current_instance().scope_name == toolbox
        print('step scope', toolbox, 'ok', type(m).__name__)

    # 3. nested blocks without the 'lsa.' prefix resolve in lsa under a toolbox scope
    if 'mmdet' in sys.argv[1:]:
        init_default_scope('mmdet')
        from mmdet.registry import MODELS
        m = MODELS.build(dict(type='lsa.LESAResNet', form='det',
                              arch=dict(base_channels=16, stage_blocks=(1, 1, 2, 2),
                                        widen_factor=1),
                              attn_cfg=dict(type='LESAAttention')))
        assert type(m.layer3[1].conv2).__name__ == 'LESAAttention'
        m = MODELS.build(dict(type='lsa.ELSASwin', arch='tiny',
                              attn_cfgs=dict(type='ShiftWindowAttention', window_size=7)))
        assert type(m.stages[0].blocks[0].attn).__name__ == 'ShiftWindowAttention'
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
        print('step nested ok')
"""


def test_lsa_registry_is_a_scoped_child_of_mmengine():
    from mmengine.registry import MODELS as ROOT
    assert MODELS.scope == 'lsa'
    assert MODELS.parent is ROOT
    assert ROOT._search_child('lsa') is MODELS


def test_lsa_scope_from_a_fresh_interpreter_and_every_toolbox_scope():
    """Lazy import of lsa.models on first lookup; 'lsa.Mlp' from mmdet, mmseg and mmpretrain
    configs (``custom_imports``); ``attn_cfg=dict(type='LESAAttention')`` (no 'lsa.') inside an
    mmdet build."""
    res = subprocess.run([sys.executable, '-c', textwrap.dedent(FRESH_INTERPRETER), *TOOLBOXES],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    steps = [ln for ln in res.stdout.splitlines() if ln.startswith('step ')]
    expected = (['step lazy-import ok'] + [f'step scope {t} ok Mlp' for t in TOOLBOXES]
                + (['step nested ok'] if 'mmdet' in TOOLBOXES else []))
    assert steps == expected, res.stdout
