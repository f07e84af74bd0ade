# CPU demo (`make demo`): a small DCAL with DeiT-Tiny's width (192, 3 heads), 4 blocks, 8x8 patches on 48x48
# images, trained from scratch on the built-in digits data in the CUB-200-2011 layout, written by
#   python tools/make_demo_data.py demo_output/data --layout cub --image-size 48 --digit-scale 0.55 0.9 \
#       --clutter 0.2 --digit-colour white --train-per-class 150 --test-per-class 30
# Not the paper's recipe (no pretrained weights exist here): AdamW 1e-3 for 25 epochs, no augmentation.
# Numbers on this data are not paper numbers; chance is 10%.
_base_ = ['./dcal_deit-tiny_cub.py']

data_root = 'demo_output/data/CUB_200_2011'

model = dict(
    backbone=dict(checkpoint_path=None, img_size=48, patch_size=8, depth=4, drop_path_rate=0.0),
    head=dict(num_classes=10),
)
data_preprocessor = dict(num_classes=10)

# the model's 48x48 from any image (an identity on the demo data's 48x48 images)
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(48, 48)), dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(48, 48)), dict(type='PackInputs')]
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=100, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 25
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, by_epoch=True, begin=2, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
auto_scale_lr = dict(enable=False)

default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=5))
custom_hooks = [
    dict(type='DatasetCheckHook'),
    dict(type='EpochSeedHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='PlainCheckpointHook'),  # checkpoints any weights_only=True loader reads
    dict(type='AttentionRolloutHook', interval=max_epochs, num_images=4),
]
