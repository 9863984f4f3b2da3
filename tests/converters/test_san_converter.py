"""Official SAN checkpoint -> lsa classifier keys (synthetic checkpoints in the released layout)."""
import os.path as osp
import re
import warnings

import pytest
import torch

from lsa.converters.common import CheckpointMismatchError
from lsa.converters.san import convert_san_checkpoint, rename_san_key

warnings.filterwarnings('ignore', message='lsa.ops')

ROOT = osp.join(osp.dirname(__file__), '..', '..')
LAYERS = {'san10': (2, 1, 2, 4, 1), 'san15': (3, 2, 3, 5, 2), 'san19': (3, 3, 4, 6, 3)}


def official_layout(arch, sa_type, num_classes=1000):
    """Key -> shape of the official model's ``state_dict`` (spec A6), without ``module.``."""
    planes, kernels = (64, 256, 512, 1024, 2048), (3, 7, 7, 7, 7)
    bn = lambda c: {'weight': (c,), 'bias': (c,), 'running_mean': (c,),  # noqa: E731
                    'running_var': (c,), 'num_batches_tracked': ()}
    shapes = {'conv_in.weight': (64, 3, 1, 1)}
    shapes.update({f'bn_in.{k}': v for k, v in bn(64).items()})
    prev = 64
    for i, (c, n, k) in enumerate(zip(planes, LAYERS[arch], kernels)):
        rel, mid, K = c // 16, c // 4, k * k
        shapes[f'conv{i}.weight'] = (c, prev, 1, 1)
        shapes.update({f'bn{i}.{key}': v for key, v in bn(c).items()})
        for b in range(n):
            p = f'layer{i}.{b}.'
            shapes.update({p + f'bn1.{key}': v for key, v in bn(c).items()})
            for j, out in ((1, rel), (2, rel), (3, mid)):
                shapes[p + f'sam.conv{j}.weight'] = (out, c, 1, 1)
                shapes[p + f'sam.conv{j}.bias'] = (out,)
            if sa_type == 'pairwise':
                w0, w2, w3, w5 = rel + 2, (rel, rel + 2, 1, 1), rel, (mid // 8, rel, 1, 1)
                shapes[p + 'sam.conv_p.weight'], shapes[p + 'sam.conv_p.bias'] = (2, 2, 1, 1), (2,)
            else:
                w0, w2 = rel * (K + 1), (mid // 8, rel * (K + 1), 1, 1)
                w3, w5 = mid // 8, (K * mid // 8, mid // 8, 1, 1)
            shapes.update({p + f'sam.conv_w.0.{key}': v for key, v in bn(w0).items()})
            shapes[p + 'sam.conv_w.2.weight'] = w2
            shapes.update({p + f'sam.conv_w.3.{key}': v for key, v in bn(w3).items()})
            shapes[p + 'sam.conv_w.5.weight'], shapes[p + 'sam.conv_w.5.bias'] = w5, (w5[0],)
            shapes.update({p + f'bn2.{key}': v for key, v in bn(mid).items()})
            shapes[p + 'conv.weight'], shapes[p + 'conv.bias'] = (c, mid, 1, 1), (c,)
        prev = c
    shapes['fc.weight'], shapes['fc.bias'] = (num_classes, 2048), (num_classes,)
    return shapes


def released_checkpoint(arch, sa_type, **kwargs):
    """A synthetic ``model_best.pth`` as tool/train.py writes it (DDP ``module.`` keys)."""
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in official_layout(arch, sa_type, **kwargs).items():
        sd['module.' + k] = (torch.tensor(5) if k.endswith('num_batches_tracked')
                             else torch.randn(shape, generator=gen))
    return {'epoch': 100, 'state_dict': sd, 'optimizer': {}, 'top1_val': 0.77, 'top5_val': 0.93}


# the inverse rename, stated independently of the converter (lsa classifier -> official)
INVERSE = [
    (r'^head\.fc\.', 'fc.'), (r'^backbone\.stem\.conv\.', 'conv_in.'),
    (r'^backbone\.stem\.norm\.', 'bn_in.'),
    (r'^backbone\.stages\.(\d+)\.transition\.', r'conv\1.'),
    (r'^backbone\.stages\.(\d+)\.norm\.', r'bn\1.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm1\.', r'layer\1.\2.bn1.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm2\.', r'layer\1.\2.bn2.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.proj\.', r'layer\1.\2.conv.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.phi\.', r'layer\1.\2.sam.conv1.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.psi\.', r'layer\1.\2.sam.conv2.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.beta\.', r'layer\1.\2.sam.conv3.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.pos_enc\.', r'layer\1.\2.sam.conv_p.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.gamma\.norm1\.', r'layer\1.\2.sam.conv_w.0.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.gamma\.conv1\.', r'layer\1.\2.sam.conv_w.2.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.gamma\.norm2\.', r'layer\1.\2.sam.conv_w.3.'),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.gamma\.conv2\.', r'layer\1.\2.sam.conv_w.5.'),
]


def to_official(key):
    for pat, rep in INVERSE:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    raise KeyError(key)


def build_classifier(arch, sa_type):
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cls', 'san', f'{arch}-{sa_type}_8xb32_in1k.py'))
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('arch,sa_type', [('san10', 'pairwise'), ('san10', 'patchwise'),
                                          ('san19', 'patchwise')])
def test_convert_released_layout(arch, sa_type):
    ckpt = released_checkpoint(arch, sa_type)
    sd, meta = convert_san_checkpoint(ckpt)
    assert meta == {'arch': arch, 'sa_type': sa_type}
    src = {k[len('module.'):]: v for k, v in ckpt['state_dict'].items()}
    assert len(sd) == len(src)
    # every tensor is carried over unchanged under its new name
    for k, v in sd.items():
        assert v is src[to_official(k)]
    # keys and shapes are those of the classifier built from our config
    with torch.device('meta'):
        model = build_classifier(arch, sa_type)
    ref = model.state_dict()
    assert set(sd) == set(ref)
    assert all(tuple(sd[k].shape) == tuple(ref[k].shape) for k in ref)
    assert all(k.startswith(('backbone.', 'head.fc.')) for k in sd)
    if sa_type == 'patchwise':
        assert sd['backbone.stages.1.blocks.0.attn.gamma.conv2.weight'].shape == (392, 8, 1, 1)
        assert sd['backbone.stages.1.blocks.0.attn.gamma.norm1.weight'].shape == (800,)


def test_rename_examples():
    assert rename_san_key('layer3.2.sam.conv_w.5.bias') == \
        'backbone.stages.3.blocks.2.attn.gamma.conv2.bias'
    assert rename_san_key('layer0.1.conv.weight') == 'backbone.stages.0.blocks.1.proj.weight'
    assert rename_san_key('bn4.running_var') == 'backbone.stages.4.norm.running_var'
    assert rename_san_key('conv2.weight') == 'backbone.stages.2.transition.weight'
    assert rename_san_key('conv_in.weight') == 'backbone.stem.conv.weight'
    assert rename_san_key('fc.bias') == 'head.fc.bias'
    assert rename_san_key('layer1.0.sam.conv_p.weight') == \
        'backbone.stages.1.blocks.0.attn.pos_enc.weight'
    assert rename_san_key('backbone.conv1.weight') is None


def test_bare_state_dict_without_prefix_or_step_counters():
    ckpt = released_checkpoint('san10', 'pairwise')
    bare = {k[len('module.'):]: v for k, v in ckpt['state_dict'].items()
            if not k.endswith('num_batches_tracked')}
    sd, meta = convert_san_checkpoint(bare)
    assert meta['sa_type'] == 'pairwise'
    assert sd['backbone.stem.norm.num_batches_tracked'].item() == 0


@pytest.mark.parametrize('sa_type', ['pairwise', 'patchwise'])
def test_round_trip_through_cli(tmp_path, sa_type, load_script):
    """lsa weights -> official layout -> san2lsa.py -> load -> identical outputs."""
    from mmengine.runner import load_checkpoint

    cli = load_script('tools/model_converters/san2lsa.py')

    src_model = build_classifier('san10', sa_type).eval()
    for m in src_model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    official = {'module.' + to_official(k): v for k, v in src_model.state_dict().items()}
    src, dst = tmp_path / 'model_best.pth', tmp_path / 'converted.pth'
    torch.save({'epoch': 100, 'state_dict': official}, src)
    cli.main([str(src), str(dst), '--arch', f'san10-{sa_type}'])
    saved = torch.load(dst, weights_only=False)
    assert saved['meta']['arch'] == 'san10' and saved['meta']['sa_type'] == sa_type
    dst_model = build_classifier('san10', sa_type).eval()
    load_checkpoint(dst_model, str(dst), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(dst_model(x, mode='tensor'), src_model(x, mode='tensor'),
                                   rtol=0, atol=0)


def test_wrong_checkpoint_lists_missing_and_unexpected():
    ckpt = released_checkpoint('san10', 'patchwise')
    sd = ckpt['state_dict']
    del sd['module.layer2.1.sam.conv3.weight']
    sd['module.layer2.1.sam.extra.weight'] = torch.zeros(3)
    sd['module.fc.bias'] = torch.zeros(10)
    with pytest.raises(CheckpointMismatchError) as info:
        convert_san_checkpoint(ckpt)
    msg = str(info.value)
    assert 'missing keys (1): backbone.stages.2.blocks.1.attn.beta.weight' in msg
    assert 'unexpected keys (1): layer2.1.sam.extra.weight' in msg
    assert 'head.fc.bias: checkpoint (10,) vs model (1000,)' in msg


def test_foreign_checkpoint_and_arch_mismatch():
    resnet_like = {'module.conv1.weight': torch.zeros(64, 3, 7, 7),
                   'module.layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}
    with pytest.raises(CheckpointMismatchError,
                       match=r'cannot identify the variant.*layer1\.0\.conv1\.weight'):
        convert_san_checkpoint(resnet_like)
    with pytest.raises(ValueError, match='no state dict found'):
        convert_san_checkpoint({'epoch': 3})
    ckpt = released_checkpoint('san10', 'pairwise')
    with pytest.raises(CheckpointMismatchError, match='san10-patchwise.*san10-pairwise'):
        convert_san_checkpoint(ckpt, arch='san10-patchwise')
    with pytest.raises(CheckpointMismatchError, match='san15-pairwise.*san10-pairwise'):
        convert_san_checkpoint(ckpt, arch='san15')
    with pytest.raises(ValueError, match='unknown arch'):
        convert_san_checkpoint(ckpt, arch='resnet50')
