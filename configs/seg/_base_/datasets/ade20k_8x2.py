# mmseg's ADE20K 512x512 data loaded as the Swin/ELSA UPerNet recipe runs it: 8 GPUs x 2 images
# (batch 16) for training, one image at a time for evaluation.
_base_ = 'mmseg::_base_/datasets/ade20k.py'

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
