"""Every config under configs/ parses, builds its model and (det/seg) runs a forward.

One test per config (parametrised). Pretrained ``init_cfg`` entries are removed
before building (no checkpoint is read), the toolbox named by the config's
``default_scope`` builds the model, and det/seg models run a loss forward and a
predict forward on a small non-square image through their own data preprocessor.
Sibling configs whose model dicts are identical (1x/3x schedules) build and run it
once: the first of them checks the model, the others check that it is the same. Siblings
that differ only in backbone size (``skeleton``) and classifiers are built on the meta
device (structure: parameter count, channels; no forward): every classifier backbone runs
in tests/models, every detector/segmentor skeleton here. Configs whose lsa backbone class is
not registered yet are skipped with a reason naming the class.

Also checked: the metafiles name every config, every metafile ``Config`` exists,
and the root ``model-index.yml`` imports every metafile.
"""
from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mmengine.config import Config

import lsa.compat_apply  # noqa: F401  (compat fixes before any toolbox import)
from lsa.registry import MODELS as LSA_MODELS

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / 'configs'
TASK_SCOPE = {'cls': 'mmpretrain', 'det': 'mmdet', 'seg': 'mmseg'}

CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in CONFIG_DIR.rglob('*.py')
                 if '_base_' not in p.parts)
# configs/<task>/demo/: the built-in demo (trained from scratch on generated data), not a
# model-zoo entry: no metafile entry and no pretrained backbone required
ZOO_CONFIGS = [p for p in CONFIGS if 'demo' not in Path(p).parts]

# small, non-square, not a multiple of 32 (the preprocessors pad to 128 x 192): the smallest
# size every backbone takes (SAN's reflect padding needs a >= 4 px stride-32 map)
IMG_H, IMG_W = 115, 170


# --------------------------------------------------------------------------- helpers
def strip_pretrained(node):
    """Remove every ``Pretrained`` init (and model-level ``pretrained``) in place.

    Returns the checkpoints that were removed.
    """
    found = []
    if isinstance(node, dict):
        for key in list(node):
            val = node[key]
            if key == 'init_cfg':
                inits = val if isinstance(val, list) else [val]
                keep = [i for i in inits if not (isinstance(i, dict)
                                                 and i.get('type') == 'Pretrained')]
                found += [i.get('checkpoint') for i in inits if i not in keep]
                node[key] = (keep if isinstance(val, list) else (keep[0] if keep else None))
            elif key == 'pretrained' and isinstance(val, str):
                found.append(val)
                node[key] = None
            else:
                found += strip_pretrained(val)
    elif isinstance(node, list):
        for item in node:
            found += strip_pretrained(item)
    return found


def lsa_types(node) -> list[str]:
    """Every ``type='lsa.X'`` in a (model) config, as the class names X."""
    out = []
    if isinstance(node, dict):
        t = node.get('type')
        if isinstance(t, str) and t.startswith('lsa.'):
            out.append(t[len('lsa.'):])
        for v in node.values():
            out += lsa_types(v)
    elif isinstance(node, list):
        for v in node:
            out += lsa_types(v)
    return out


def skip_if_backbone_missing(cfg: Config) -> None:
    missing = [n for n in lsa_types(cfg.model) if LSA_MODELS.get(n) is None]
    if missing:
        pytest.skip(f'lsa class(es) not implemented yet: {sorted(set(missing))}')


def build_model(cfg: Config, device: str = 'cpu'):
    """The config's model, initialised; on ``'meta'`` only its structure (no weights)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    with torch.device(device):
        model = registry.build(cfg.model)
    if device != 'meta':
        model.init_weights()
    return revert_sync_batchnorm(model)  # SyncBN heads -> BN on one CPU process


def skeleton(cfg: Config) -> str:
    """The model with its backbone's size left out: what a forward run can tell apart.

    Siblings that differ only in backbone size (ELSA-Swin-T/-S) or schedule (1x/3x) share
    one skeleton; the first runs the forward, the others are checked structurally.
    """
    model = copy.deepcopy(cfg.model.to_dict())
    for key in ('arch', 'drop_path_rate', 'init_cfg', 'stage_spatial_res'):
        model.get('backbone', {}).pop(key, None)
    for key in ('neck', 'decode_head', 'auxiliary_head'):
        if isinstance(model.get(key), dict):
            model[key].pop('in_channels', None)
    return json.dumps(model, sort_keys=True, default=str)


def det_batch(with_seg: bool, num_classes: int):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData

    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, IMG_H, IMG_W), dtype=torch.uint8, generator=gen)
    boxes = torch.tensor([[10., 20., 90., 110.], [100., 30., 160., 100.]])
    masks = np.zeros((2, IMG_H, IMG_W), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    sample = DetDataSample(metainfo=dict(img_shape=(IMG_H, IMG_W), ori_shape=(IMG_H, IMG_W),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, num_classes - 1]),
                                       masks=BitmapMasks(masks, IMG_H, IMG_W))
    if with_seg:
        sample.gt_sem_seg = PixelData(
            sem_seg=torch.randint(0, 183, (1, IMG_H, IMG_W), generator=gen))
    return dict(inputs=[img], data_samples=[sample])


def seg_batch():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(0)
    imgs, samples = [], []
    for _ in range(2):  # > 1 image: the pooling branch's BN sees 1x1 maps in training
        imgs.append(torch.randint(0, 256, (3, IMG_H, IMG_W), dtype=torch.uint8, generator=gen))
        sample = SegDataSample(metainfo=dict(img_shape=(IMG_H, IMG_W),
                                             ori_shape=(IMG_H, IMG_W)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, IMG_H, IMG_W), generator=gen))
        samples.append(sample)
    return dict(inputs=imgs, data_samples=samples)


def assert_finite_losses(losses: dict, must_have: tuple[str, ...]) -> None:
    flat = {}
    for k, v in losses.items():
        for i, t in enumerate(v if isinstance(v, list | tuple) else [v]):
            flat[f'{k}.{i}'] = t
    for key in must_have:
        assert any(key in k for k in flat), f'no {key!r} among losses {sorted(flat)}'
    for k, v in flat.items():
        if 'loss' in k:
            assert torch.isfinite(v).all(), f'{k} = {v}'


def fewer_boxes(cfg: Config) -> None:
    """Test-only budget: fewer proposals / sampled RoIs / detections (same architecture).

    ``score_thr=0`` keeps every detection so the predict pass runs the mask head and
    pastes masks back to the non-square original size.
    """
    m = cfg.model
    m.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=50)
    m.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
    rcnn = m.train_cfg.rcnn
    for stage in (rcnn if isinstance(rcnn, list) else [rcnn]):
        stage.sampler.num = 32
    m.test_cfg.rcnn.update(score_thr=0.0, max_per_img=5)


def run_det(cfg: Config, path: str) -> None:
    fewer_boxes(cfg)
    model = build_model(cfg)
    with_seg = 'semantic_head' in cfg.model.get('roi_head', {})
    heads = cfg.model.roi_head.bbox_head
    num_classes = (heads[0] if isinstance(heads, list) else heads).num_classes
    batch = det_batch(with_seg, num_classes)

    model.train()
    with torch.no_grad():  # the loss graph is built by the forward; no backward needed here
        data = model.data_preprocessor(copy.deepcopy(batch), training=True)
        pad_h, pad_w = data['inputs'].shape[-2:]
        assert (pad_h, pad_w) != (IMG_H, IMG_W) and pad_h % 32 == 0 and pad_w % 32 == 0
        losses = model(**data, mode='loss')
    assert_finite_losses(losses, ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask')
                         + (('loss_semantic_seg', ) if with_seg else ()))

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(copy.deepcopy(batch), training=False)
        (pred, ) = model(**data, mode='predict')
    inst = pred.pred_instances
    assert len(inst) > 0, f'{path}: no detections at score_thr 0'
    assert inst.bboxes.shape[1] == 4
    assert tuple(inst.masks.shape[1:]) == (IMG_H, IMG_W)
    return model


def run_seg(cfg: Config) -> None:
    cfg.model.data_preprocessor.size = None  # pad to /32 instead of to the 512 crop
    cfg.model.data_preprocessor.size_divisor = 32
    model = build_model(cfg)
    batch = seg_batch()

    model.train()
    with torch.no_grad():
        data = model.data_preprocessor(copy.deepcopy(batch), training=True)
        losses = model(**data, mode='loss')
    assert_finite_losses(losses, ('decode.loss_ce', 'aux.loss_ce'))

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(copy.deepcopy(batch), training=False)
        preds = model(**data, mode='predict')
    for pred in preds:
        assert tuple(pred.pred_sem_seg.data.shape) == (1, IMG_H, IMG_W)
        assert tuple(pred.seg_logits.data.shape) == (150, IMG_H, IMG_W)
    return model


def neck_in_channels(cfg: Config):
    if 'neck' in cfg.model and 'in_channels' in cfg.model.neck:
        return list(cfg.model.neck.in_channels)
    if 'decode_head' in cfg.model:
        return list(cfg.model.decode_head.in_channels)
    return None


def metafile_entry(path: str) -> dict:
    """The metafile ``Models`` entry whose ``Config`` is ``path`` ({} if none)."""
    for mf in CONFIG_DIR.rglob('metafile.yml'):
        for m in yaml.safe_load(mf.read_text()).get('Models', []):
            if m.get('Config') == path:
                return m
    return {}


# --------------------------------------------------------------------------- per config
def test_config_tree_is_not_empty():
    tasks = {Path(p).parts[1] for p in CONFIGS}
    assert {'det', 'seg'} <= tasks, f'configs found: {CONFIGS}'


#: Model dict (as JSON) -> (first config with it, its parameter count, its out_channels, its
#: metafile FLOPs).
_CHECKED_MODELS: dict[str, tuple[str, int, list | None, int | None]] = {}
#: Skeletons (see ``skeleton``) whose loss and predict forwards ran.
_RUN_SKELETONS: set[str] = set()


# reverse order: of ELSA-Swin-T/-S siblings the T config (the smaller) comes first and runs
@pytest.mark.parametrize('path', sorted(CONFIGS, reverse=True))
def test_config_builds_and_runs(path, load_config):
    task = Path(path).parts[1]
    cfg = load_config(path)
    scope = TASK_SCOPE[task]
    assert cfg.default_scope == scope, f'{path}: default_scope {cfg.default_scope!r}'
    assert 'lsa.models' in cfg.custom_imports['imports']
    assert cfg.custom_imports.get('allow_failed_imports') is False
    skip_if_backbone_missing(cfg)

    ckpts = strip_pretrained(cfg.model)
    # pretrained backbones come from our converters, written under checkpoints/
    assert all(str(c).startswith('checkpoints/') for c in ckpts), ckpts
    if task in ('det', 'seg') and path in ZOO_CONFIGS:
        assert lsa_types(cfg.model.backbone), f'{path}: backbone is not an lsa class'

    expected = metafile_entry(path).get('Metadata', {}).get('Parameters')
    flops = metafile_entry(path).get('Metadata', {}).get('FLOPs')  # measured once per model
    key = json.dumps(cfg.model.to_dict(), sort_keys=True, default=str)
    if key in _CHECKED_MODELS:  # a sibling (e.g. the 1x of a 3x) built and ran this model
        first, count, out_channels, first_flops = _CHECKED_MODELS[key]
        assert expected is None or count == expected, (path, first)
        assert flops == first_flops, (path, first)
        assert out_channels is None or out_channels == neck_in_channels(cfg), (path, first)
        return

    shape = skeleton(cfg)  # before run_det trims the proposal budget in cfg
    if task == 'cls' or shape in _RUN_SKELETONS:
        # classifiers, and siblings of a model that ran: structure only (parameter count,
        # channels), built on the meta device: no weights allocated, no forward
        model = build_model(cfg, device='meta')
    elif task == 'det':
        model = run_det(cfg, path)
    else:
        model = run_seg(cfg)
    if task != 'cls':
        _RUN_SKELETONS.add(shape)
    out_channels = None
    if task in ('det', 'seg') and lsa_types(cfg.model.backbone):
        # FPN / UPerHead in_channels equal the lsa backbone's out_channels
        out_channels = list(model.backbone.out_channels)
        assert out_channels == neck_in_channels(cfg), path
    count = sum(p.numel() for p in model.parameters())
    if expected is not None:
        assert count == expected, path
    _CHECKED_MODELS[key] = (path, count, out_channels, flops)


# --------------------------------------------------------------------------- metafiles
def metafiles() -> list[Path]:
    return sorted(CONFIG_DIR.rglob('metafile.yml'))


def test_every_config_is_in_a_metafile():
    named = set()
    for mf in metafiles():
        data = yaml.safe_load(mf.read_text())
        for m in data.get('Models', []):
            named.add(m['Config'])
    missing = [p for p in ZOO_CONFIGS if p not in named]
    assert not missing, f'configs not named in any metafile: {missing}'


@pytest.mark.parametrize('mf', [p.relative_to(ROOT).as_posix() for p in metafiles()])
def test_metafile_entries(mf):
    data = yaml.safe_load((ROOT / mf).read_text())
    collections = {c['Name']: c for c in data.get('Collections', [])}
    names = [m['Name'] for m in data['Models']]
    assert len(names) == len(set(names)), f'duplicate model names in {mf}'
    for m in data['Models']:
        assert (ROOT / m['Config']).is_file(), f"{mf}: {m['Name']}: {m['Config']} missing"
        assert m['In Collection'] in collections, f"{mf}: {m['Name']}: unknown collection"
        meta = dict(collections[m['In Collection']].get('Metadata', {}), **m['Metadata'])
        assert meta.get('Training Data'), f"{mf}: {m['Name']}: no Training Data"
        for res in m.get('Results', []):
            assert res['Task'] and res['Dataset'] and res['Metrics'], m['Name']


def test_model_index_imports_every_metafile():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    imported = index['Import']
    present = {p.relative_to(ROOT).as_posix() for p in metafiles()}
    assert present <= set(imported), f'not imported: {sorted(present - set(imported))}'
    missing = [p for p in imported if not (ROOT / p).is_file()]
    cls_missing = [p for p in missing if re.match(r'configs/cls/', p)]
    assert missing == cls_missing, f'model-index imports missing files: {missing}'
    if cls_missing:
        pytest.skip(f'cls metafiles not written yet (backbone tasks): {cls_missing}')


# --------------------------------------------------------------------------- docs example
def test_new_experiment_doc_example(tmp_path):
    """docs/new_experiment.md's worked example inherits a recipe and overrides a few keys."""
    doc = (ROOT / 'docs' / 'new_experiment.md').read_text()
    marker = doc.index('<!-- tested: tests/configs/test_configs.py::test_new_experiment_doc_example')
    block = re.search(r'```python\n(.*?)```', doc[marker:], re.S).group(1)
    assert block.startswith("_base_ = './mask_rcnn_elsa_swin_t_1x.py'")
    # saved next to its parent, as the doc says (an absolute base, so nothing is written
    # into configs/ while the suite runs)
    parent = CONFIG_DIR / 'det' / 'mask_rcnn_elsa_swin_t_1x.py'
    new = tmp_path / 'mask_rcnn_elsa_swin_t_elsa01_4xb4_1x.py'
    new.write_text(block.replace("'./mask_rcnn_elsa_swin_t_1x.py'", repr(str(parent)), 1))
    cfg = Config.fromfile(str(new))
    base = Config.fromfile(str(parent))

    # the overrides took ...
    types = [c['type'] for c in cfg.model.backbone.attn_cfgs]
    assert types == ['lsa.ELSAAttention'] * 2 + ['lsa.ShiftWindowAttention'] * 2
    assert cfg.train_dataloader.batch_size == 4 and cfg.optim_wrapper.optimizer.lr == 2e-4
    # ... and everything else is the parent's recipe
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.paramwise_cfg == base.optim_wrapper.paramwise_cfg
    assert cfg.train_dataloader.dataset.pipeline == base.train_dataloader.dataset.pipeline
    assert cfg.param_scheduler == base.param_scheduler
    assert cfg.model.backbone.drop_path_rate == base.model.backbone.drop_path_rate
    assert cfg.model.backbone.init_cfg == base.model.backbone.init_cfg
    skip_if_backbone_missing(cfg)

    strip_pretrained(cfg.model)
    backbone = LSA_MODELS.build(copy.deepcopy(cfg.model.backbone))
    kinds = [type(stage.blocks[0].attn).__name__ for stage in backbone.stages]
    assert kinds == ['ELSAAttention'] * 2 + ['ShiftWindowAttention'] * 2
    # the detector around it is the parent's (whose forward test_config_builds_and_runs runs)
    assert {k: v for k, v in cfg.model.items() if k != 'backbone'} == \
        {k: v for k, v in base.model.items() if k != 'backbone'}


@pytest.mark.parametrize('path, kinds', [
    ('configs/det/mask_rcnn_elsa_swin_t_1x.py', ['ELSAAttention'] * 3 + ['ShiftWindowAttention']),
    ('configs/det/mask_rcnn_elsa_swin_t_all_elsa_1x.py', ['ELSAAttention'] * 4),
    ('configs/det/mask_rcnn_swin_t_window_baseline_1x.py', ['ShiftWindowAttention'] * 4),
])
def test_attention_swap_configs(path, kinds, load_config):
    """The swap configs differ from the published one only in the per-stage attention."""
    cfg = load_config(path)
    skip_if_backbone_missing(cfg)
    strip_pretrained(cfg.model)
    backbone = LSA_MODELS.build(cfg.model.backbone)
    assert [type(s.blocks[0].attn).__name__ for s in backbone.stages] == kinds
    assert all(type(b.attn).__name__ == k for s, k in zip(backbone.stages, kinds)
               for b in s.blocks)
    base = load_config('configs/det/mask_rcnn_elsa_swin_t_1x.py')
    for key in ('train_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert cfg[key] == base[key], key
    assert {k: v for k, v in cfg.model.items() if k != 'backbone'} == \
        {k: v for k, v in base.model.items() if k != 'backbone'}


def test_model_zoo_doc_lists_every_zoo_config():
    doc = (ROOT / 'docs' / 'model_zoo.md').read_text()
    missing = [p for p in ZOO_CONFIGS if f'`{p}`' not in doc]
    assert not missing, f'docs/model_zoo.md does not list: {missing}'


def model_zoo_rows() -> list[dict[str, str]]:
    """The rows of docs/model_zoo.md's model tables: {column header: cell} per config row."""
    rows, header = [], None
    for line in (ROOT / 'docs' / 'model_zoo.md').read_text().splitlines():
        if not line.startswith('|'):
            header = None
            continue
        cells = [c.strip() for c in line.strip('|').split('|')]
        if header is None:
            header = [c.split(' (')[0] for c in cells]  # 'FLOPs (800x1280)' -> 'FLOPs'
        elif cells[1].startswith('`configs/'):
            rows.append(dict(zip(header, cells)))
    return rows


def _matches(cell: str, value: int | None, unit: str, scale: float) -> bool:
    """A model-zoo cell ('48.65M', '269.9G', '-') shows ``value`` at its own precision."""
    if cell == '-':
        return value is None
    m = re.fullmatch(rf'(\d+(?:\.(\d+))?){unit}', cell)
    if m is None or value is None:
        return False
    return float(m.group(1)) == round(value / scale, len(m.group(2) or ''))


def test_model_zoo_doc_numbers_are_the_metafiles():
    """Every params / FLOPs cell of docs/model_zoo.md is its metafile's exact count, rounded
    to the cell's precision ('-' exactly where the metafile has no count)."""
    rows = model_zoo_rows()
    assert {r['config'].strip('`') for r in rows} >= set(ZOO_CONFIGS)
    metadata = {m['Config']: m.get('Metadata', {}) for mf in metafiles()
                for m in yaml.safe_load(mf.read_text()).get('Models', [])}
    wrong = []
    for row in rows:
        path = row['config'].strip('`')
        meta = metadata.get(path, {})
        for col, key, unit, scale in (('params', 'Parameters', 'M', 1e6),
                                      ('FLOPs', 'FLOPs', 'G', 1e9)):
            if col not in row:
                wrong.append(f'{path}: no {col} column')
            elif not _matches(row[col], meta.get(key), unit, scale):
                wrong.append(f'{path}: {col} {row[col]!r}, metafile {meta.get(key)}')
    assert not wrong, '\n'.join(wrong)

