# The generated COCO-format shapes dataset (tools/misc/make_demo_data.py coco DIR) for mmdet.
# Every name carries a `shapes_` prefix so this file can sit next to a full detector config in
# `_base_` without duplicate keys; a leaf config swaps the data in with e.g.
#   train_dataloader = dict(_delete_=True, **_base_.shapes_train_dataloader)
# The data root comes from $LSA_DEMO_COCO (default data/demo_coco/).
shapes_data_root = '{{$LSA_DEMO_COCO:data/demo_coco/}}'
shapes_classes = ('circle', 'square', 'triangle')
shapes_img_scale = (128, 128)

shapes_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=shapes_img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
shapes_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=shapes_img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_shapes_coco = dict(  # both splits' dataset: the files below data_root, the three classes
    type='CocoDataset', data_root=shapes_data_root, metainfo=dict(classes=shapes_classes))
shapes_train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        _shapes_coco,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=shapes_train_pipeline))
shapes_val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _shapes_coco,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=shapes_test_pipeline))
shapes_val_evaluator = dict(
    type='CocoMetric',
    ann_file=shapes_data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'],
    format_only=False)
