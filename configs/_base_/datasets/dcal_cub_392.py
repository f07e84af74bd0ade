# CUB-200-2011 for patch-14 backbones (DINOv2) [beyond the paper]: the paper's pipeline scaled by 392/448, resize to
# 481 x 481 and crop 392, so that the crop keeps the paper's 448/550 share of the image and the 28 x 28 patch grid.
_base_ = ['./dcal_cub.py']

train_pipeline = [
    dict(type='DCALLoadImageFromFile'),
    dict(type='Resize', scale=(481, 481)),
    dict(type='RandomCrop', crop_size=392),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(481, 481)),
    dict(type='CenterCrop', crop_size=392),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
