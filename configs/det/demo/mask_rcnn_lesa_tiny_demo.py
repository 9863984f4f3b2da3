# The README's main job (demo/run_demo.sh): the LESA Mask R-CNN recipe of
# configs/det/mask_rcnn_lesa_r50.py shrunk to train on CPU in a few minutes on the generated
# shapes dataset (tools/misc/make_demo_data.py coco data/demo_coco). Not a paper recipe:
# a tiny LESA-ResNet (16 base channels, 1-1-2-2 blocks, LESA in c4/c5 with DCN in c3-c5 as
# released), 128 px images, trained from scratch (no frozen stages, BN statistics updated)
# with AdamW.
_base_ = [
    '../mask_rcnn_lesa_r50.py',
    './_base_/coco_shapes.py',
]

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, base_channels=16, stage_blocks=(1, 1, 2, 2), widen_factor=1),
        stage_spatial_res=(32, 16, 8, 4),  # the 128 px input's c2-c5 map sizes
        attn_cfg=dict(type='lsa.LESAAttention', with_cp=False),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64,
                  anchor_generator=dict(scales=[4])),  # 16-256 px anchors for 20-60 px shapes
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rcnn=dict(max_per_img=20)))

train_dataloader = dict(_delete_=True, **_base_.shapes_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.shapes_val_dataloader)
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, **_base_.shapes_val_evaluator)
test_evaluator = val_evaluator

max_epochs = int('{{$LSA_DEMO_EPOCHS:12}}')  # demo/run_demo.sh shortens it for the e2e test
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.75)], gamma=0.1),
]
# AdamW learns this from-scratch model faster than the recipe's SGD (measured after 12 epochs:
# bbox mAP 0.09-0.10 vs 0.05); lr 2e-3 sometimes did better (0.12-0.13) but one seed in three
# stalled at 0.04, so the demo uses the steadier 1e-3. The demo departs from the recipe here.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.001, weight_decay=0.05))
auto_scale_lr = dict(base_batch_size=4)
# a checkpoint every epoch (tools/train.py writes it atomically, then drops the previous one)
default_hooks = dict(logger=dict(interval=8), checkpoint=dict(interval=1, max_keep_ckpts=1))
log_processor = dict(window_size=8)
randomness = dict(seed=0)  # reproducible demo numbers (docs/train_test.md)
