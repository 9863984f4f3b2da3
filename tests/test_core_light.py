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


def test_core_imports_builds_and_runs_without_toolboxes():
    """One interpreter with the toolboxes blocked: the core imports, every registered backbone
    (tiny widths) runs forward + backward on lsa's ops alone, and what needs mmcv (LESA's DCN)
    says so with an ImportError."""
    res = _run("""
        import torch
        import lsa, lsa.ops, lsa.models, lsa.converters
        from lsa.registry import MODELS
        from lsa.models.backbones.base import BaseLSABackbone
        names = sorted(MODELS.module_dict)
        assert 'Mlp' in names, names
        print('registered:', names)
        m = MODELS.build(dict(type='Mlp', in_features=4))
        assert m(torch.randn(2, 3, 4)).shape == (2, 3, 4)
        cfgs = {
            'SAN': dict(arch=dict(widths=(32, 32, 64, 64, 96), layers=(1, 1, 1, 1, 1),
                                  kernels=(3, 3, 3, 3, 3)), sa_type='patchwise',
                        out_indices=(1, 2, 3, 4)),
            'LESAResNet': dict(arch=dict(base_channels=16, stage_blocks=(1, 1, 2, 2),
                                         widen_factor=1), form='det', out_indices=(0, 1, 2, 3)),
            'ELSASwin': dict(arch=dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                                       group_width=4)),
            'SwinHost': dict(arch=dict(embed_dims=8, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))),
            'LocalViT': dict(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2,
                                       se_channels=4)),
            'LocalViTPVT': dict(arch=dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                          num_heads=[1, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                                          sr_ratios=[4, 2, 1, 1], se_channels=[2, 2, 2, 2])),
            'LocalViTTNT': dict(arch='tiny'),
            'LocalViTSwin': dict(arch=dict(embed_dims=8, depths=(1, 1, 1, 1),
                                           num_heads=(1, 2, 2, 4))),
            'LocalViTT2T': dict(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2,
                                          se_channels=4), token_dims=16),
        }
        registered = {n for n, c in MODELS.module_dict.items()
                      if isinstance(c, type) and issubclass(c, BaseLSABackbone)}
        assert registered == set(cfgs), registered ^ set(cfgs)
        x = torch.randn(1, 3, 128, 128)
        for name, cfg in cfgs.items():
            model = MODELS.build(dict(type=name, **cfg))
            outs = model(x)
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            sum(o.float().sum() for o in outs).backward()
            print(name, [tuple(o.shape) for o in outs])
        assert not any(k.split('.')[0] in ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'torchvision')
                       for k in sys.modules)
        try:
            MODELS.build(dict(type='LESAResNet', arch='r50', form='det', dcn=dict(type='DCN'),
                              stage_with_dcn=(False, True, True, True)))
        except ImportError as e:
            assert 'dcn=' in str(e) and 'mmcv' in str(e), e
        else:
            raise AssertionError('LESAResNet with dcn built without mmcv')
    """)
    assert res.returncode == 0, res.stderr
