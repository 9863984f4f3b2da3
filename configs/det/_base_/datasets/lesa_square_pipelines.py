# The pipeline pieces of the official LESA detection configs (Chenglin-Yang/LESA_detection):
# every image resized to a fixed square, ignoring its aspect ratio, in training and test; random
# flip in training. The frames (mask_rcnn_lesa_r50.py, htc_lesa_wrn50.py) set the square and
# which annotations are loaded for training:
#   _resize = dict(_base_._square_resize, scale=image_size)
#   train_pipeline = [_base_._load_image, <LoadAnnotations>, _resize, *_base_._flip_and_pack]
#   test_pipeline = [_base_._load_image, _resize, *_base_._test_tail]
# backend_args as mmdet's COCO dataset bases (None: local files).
_load_image = dict(type='LoadImageFromFile', backend_args=None)
_load_masks = dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
_square_resize = dict(type='Resize', keep_ratio=False)  # + scale: the frame's square
_flip_and_pack = [dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
_test_tail = [
    _load_masks,
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
