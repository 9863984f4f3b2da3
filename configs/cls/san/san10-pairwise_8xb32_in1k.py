# SAN10 pairwise on ImageNet-1k: the published recipe of hszhao/SAN (8 GPUs x 32 images,
# SGD lr 0.1 momentum 0.9 wd 1e-4 on all parameters, cosine over 100 epochs stepped per epoch,
# no warm-up, label smoothing 0.1, RandomResizedCrop 224 + flip; eval resize 256 / crop 224, both
# resized with PIL as torchvision does; the reported number is the best validation epoch's
# checkpoint (the official model_best.pth), kept here by save_best).
_base_ = [
    '../_base_/models/resnet_classifier.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_bs256_coslr.py',
    'mmpretrain::_base_/default_runtime.py',
]
default_scope = 'mmpretrain'

model = dict(
    backbone=dict(type='lsa.SAN', arch='san10', sa_type='pairwise', out_indices=(4, )),
    # the official smooth_loss gives 0.9 to the target and 0.1 / 999 to each other class;
    # mmpretrain's 'original' mode (1 - e) * onehot + e / K equals it for e = 0.1 * K / (K - 1)
    head=dict(loss=dict(_delete_=True, type='LabelSmoothLoss',
                        label_smooth_val=0.1 * 1000 / 999, mode='original')))

# every epoch's checkpoint as before, plus best_accuracy_top1_epoch_*.pth: the official
# tool/train.py reports its model_best.pth, the epoch with the best validation top-1
default_hooks = dict(checkpoint=dict(save_best='accuracy/top1', rule='greater'))
