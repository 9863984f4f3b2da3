"""The lsa core imports and runs with torch + mmengine alone (toolboxes blocked)."""
import subprocess
import sys
import textwrap

BLOCKER = """
    import sys, importlib.abc
    BLOCKED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'torchvision')
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError(f'{name} is blocked for this test')
            return None
    sys.meta_path.insert(0, Block())
"""


def _run(body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(BLOCKER) + textwrap.dedent(body)
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=600)


def test_blocker_works():
    res = _run('import mmcv')
    assert res.returncode != 0 and 'blocked' in res.stderr


def test_core_imports_and_runs_without_toolboxes():
    res = _run("""
        import torch
        import lsa, lsa.ops, lsa.models, lsa.converters
        from lsa.registry import MODELS
        from lsa.models.backbones.base import BaseLSABackbone
        names = sorted(MODELS.module_dict)
        assert 'Mlp' in names, names
        backbones = [n for n in names if issubclass(MODELS.get(n), BaseLSABackbone)]
        print('registered:', names)
        print('backbones:', backbones)
        m = MODELS.build(dict(type='Mlp', in_features=4))
        assert m(torch.randn(2, 3, 4)).shape == (2, 3, 4)
        assert not any(k.split('.')[0] in ('mmcv', 'mmdet', 'mmseg', 'mmpretrain')
                       for k in sys.modules)
    """)
    assert res.returncode == 0, res.stderr
