"""The synthetic dataset generators: deterministic, and valid for the toolboxes that read them."""
import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lsa.datasets import SHAPES, make_ade20k, make_cls_folder, make_coco_instances, render_scene
from lsa.datasets.shapes import mask_to_bbox, shape_mask


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob('*') if p.is_file())
    return files_a == files_b and all(
        filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


@pytest.mark.parametrize('make', [make_coco_instances, make_ade20k, make_cls_folder])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, make):
    make(str(tmp_path / 'a'), num_train=3, num_val=2, seed=3)
    make(str(tmp_path / 'b'), num_train=3, num_val=2, seed=3)
    make(str(tmp_path / 'c'), num_train=3, num_val=2, seed=4)
    assert _same_tree(tmp_path / 'a', tmp_path / 'b')
    assert not _same_tree(tmp_path / 'a', tmp_path / 'c')


def test_val_split_does_not_depend_on_num_train(tmp_path):
    make_coco_instances(str(tmp_path / 'a'), num_train=2, num_val=2)
    make_coco_instances(str(tmp_path / 'b'), num_train=5, num_val=2)
    assert _same_tree(tmp_path / 'a' / 'val', tmp_path / 'b' / 'val')


def test_scene_masks_are_disjoint_and_shapes_have_expected_area():
    rng = np.random.default_rng(0)
    for _ in range(10):
        image, instances = render_scene(rng, 96, 80, SHAPES, max_objects=4)
        assert image.shape == (96, 80, 3) and image.dtype == np.uint8
        assert 1 <= len(instances) <= 4
        total = sum(inst.mask.astype(int) for inst in instances)
        assert total.max() == 1  # no overlaps
    # A circle of radius 20 covers about pi * 20^2 pixels; a square of "radius" r about 2 r^2.
    circle = shape_mask(rng, 'circle', 64, 64, 32, 32, 20)
    assert abs(circle.sum() - np.pi * 400) < 0.05 * np.pi * 400
    square = shape_mask(rng, 'square', 64, 64, 32, 32, 20)
    assert abs(square.sum() - 2 * (20 * 0.95) ** 2) < 0.1 * 2 * (20 * 0.95) ** 2
    assert mask_to_bbox(circle) == [12.0, 12.0, 41.0, 41.0]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"make_coco_instances: classes must be .* \('hexagon',\)"):
        make_coco_instances('/nonexistent', classes=('hexagon',))
    with pytest.raises(ValueError, match=r'size must be >= 32 px per side, got \(16, 64\)'):
        make_coco_instances('/nonexistent', size=(16, 64))
    with pytest.raises(ValueError, match='make_ade20k: num_train and num_val must be >= 1'):
        make_ade20k('/nonexistent', num_train=0)


def test_coco_layout_matches_the_rendered_masks(tmp_path):
    pycoco = pytest.importorskip('pycocotools.coco')
    info = make_coco_instances(str(tmp_path), num_train=6, num_val=3, size=(64, 80))
    assert info['classes'] == ('circle', 'square', 'triangle')
    coco = pycoco.COCO(str(tmp_path / info['train_ann']))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(info['classes'])
    assert len(coco.getImgIds()) == 6
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 6  # at least one object per image
    for ann in anns:
        img = coco.loadImgs(ann['image_id'])[0]
        assert (img['height'], img['width']) == (64, 80)
        assert (tmp_path / 'train' / img['file_name']).is_file()
        x, y, w, h = ann['bbox']
        assert x >= 0 and y >= 0 and x + w <= 80 and y + h <= 64 and w >= 1 and h >= 1
        assert ann['iscrowd'] == 0 and all(len(p) >= 6 for p in ann['segmentation'])
        # The polygon rasterises to (almost) the mask whose pixel count is the area.
        mask = coco.annToMask(ann)
        assert abs(int(mask.sum()) - ann['area']) <= 0.35 * ann['area'] + 4
        ys, xs = np.nonzero(mask)
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
        # The semantic map (HTC) holds the class index inside the object, K = 3 outside it.
        sem = cv2.imread(str(tmp_path / info['train_seg'] / img['file_name'].replace(
            '.jpg', '.png')), cv2.IMREAD_UNCHANGED)
        inside = sem[mask > 0]
        assert (inside == ann['category_id'] - 1).mean() > 0.9
    sem = cv2.imread(str(tmp_path / 'semantic/val/000000.png'), cv2.IMREAD_UNCHANGED)
    assert sem.shape == (64, 80) and set(np.unique(sem)) <= {0, 1, 2, 3} and 3 in sem


def test_coco_layout_loads_in_mmdet(tmp_path):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    info = make_coco_instances(str(tmp_path), num_train=4, num_val=2)
    ds = CocoDataset(data_root=str(tmp_path), ann_file=info['train_ann'],
                     data_prefix=dict(img=info['train_img']),
                     metainfo=dict(classes=info['classes']), pipeline=[])
    assert len(ds) == 4
    item = ds[0]
    assert item['img_path'].endswith('train/000000.jpg')
    assert item['instances'] and all(0 <= i['bbox_label'] < 3 for i in item['instances'])


def test_ade20k_layout_labels_and_mmseg(tmp_path):
    info = make_ade20k(str(tmp_path), num_train=3, num_val=2, size=(48, 64))
    root = Path(info['data_root'])
    assert root.name == 'ADEChallengeData2016'
    for folder, n in (('training', 3), ('validation', 2)):
        imgs = sorted((root / 'images' / folder).glob('*.jpg'))
        anns = sorted((root / 'annotations' / folder).glob('*.png'))
        assert [p.stem for p in imgs] == [p.stem for p in anns] and len(imgs) == n
        for p in anns:
            label = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert label.shape == (48, 64) and label.dtype == np.uint8
            assert set(np.unique(label)) <= {0, *info['labels'].values()}
            assert (label == info['labels']['background']).any() and (label == 0).any()
    pytest.importorskip('mmseg')
    from mmseg.datasets import ADE20KDataset
    ds = ADE20KDataset(data_root=str(root), data_prefix=dict(
        img_path='images/validation', seg_map_path='annotations/validation'), pipeline=[])
    assert len(ds) == 2 and ds[0]['reduce_zero_label'] is True


def test_cls_folder_layout_and_meta(tmp_path):
    info = make_cls_folder(str(tmp_path), num_train=2, num_val=1, classes=('triangle', 'circle'))
    assert info['classes'] == ('circle', 'triangle')  # sorted like the folder scan
    lines = (tmp_path / 'meta' / 'train.txt').read_text().splitlines()
    assert lines == ['circle/000000.png 0', 'circle/000001.png 0',
                     'triangle/000000.png 1', 'triangle/000001.png 1']
    for line in lines:
        assert (tmp_path / 'train' / line.split()[0]).is_file()
    pytest.importorskip('mmpretrain')
    from mmpretrain.datasets import CustomDataset
    folder = CustomDataset(data_root=str(tmp_path), data_prefix='val', pipeline=[])
    assert folder.CLASSES == ('circle', 'triangle') and len(folder) == 2
    meta = CustomDataset(data_root=str(tmp_path), ann_file='meta/train.txt',
                         data_prefix='train', pipeline=[])
    assert [meta.get_gt_labels().tolist()] == [[0, 0, 1, 1]]


def test_make_demo_data_cli(tmp_path, capsys, load_script):
    cli = load_script('tools/misc/make_demo_data.py')
    info = cli.main(['coco', str(tmp_path), '--num-train', '2', '--num-val', '1', '--size',
                     '48', '64', '--classes', 'star', 'circle'])
    printed = json.loads(capsys.readouterr().out)
    assert printed['classes'] == ['star', 'circle'] and info['classes'] == ('star', 'circle')
    data = json.loads((tmp_path / 'annotations' / 'instances_val.json').read_text())
    assert len(data['images']) == 1 and data['images'][0]['height'] == 48


def test_generators_import_without_toolboxes():
    code = ('import sys, lsa.datasets, lsa.runner_config; '
            'bad = [m for m in ("mmcv", "mmdet", "mmseg", "mmpretrain") if m in sys.modules]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ})
