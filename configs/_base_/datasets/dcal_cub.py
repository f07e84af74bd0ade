# CUB-200-2011 through mmpretrain's CUB reader, with the paper's FGVC input pipeline (METHOD §7):
# resize to 550 x 550, random crop 448 (centre crop at test), horizontal flip, batch 16.
_base_ = ['mmpretrain::_base_/datasets/cub_bs8_448.py']

train_pipeline = [
    dict(type='DCALLoadImageFromFile'),  # mmcv's loader whose errors name the file; the test pipeline keeps
    # mmcv's, which mmpretrain's inferencer removes by its name
    dict(type='Resize', scale=(550, 550)),
    dict(type='RandomCrop', crop_size=448),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(550, 550)),
    dict(type='CenterCrop', crop_size=448),
    dict(type='PackInputs'),
]

train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# top-1 / top-5 of the fused prediction, and top-1 of SA alone, GLCA alone and fused
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='DCALBranchAccuracy')]
test_evaluator = val_evaluator
