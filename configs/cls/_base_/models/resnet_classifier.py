# The classifier frame of mmpretrain's ResNet-50 (ImageClassifier, global average pooling, a
# LinearClsHead 2048 -> 1000 classes reporting top-1/top-5), shared by lsa's ResNet-shaped
# ImageNet classifiers (SAN, LESA). Frames add the backbone (and may swap the loss).
custom_imports = dict(imports=['lsa.models'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5)))
