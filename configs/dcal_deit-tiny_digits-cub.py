# CPU demo: a small DeiT-Tiny-width DCAL trained from scratch on the built-in digits data in the CUB layout
# (`python tools/make_demo_data.py demo_output/data --layout cub`). Numbers on this data are not paper numbers.
_base_ = ['./dcal_deit-tiny_cub.py']

data_root = 'demo_output/data/CUB_200_2011'

model = dict(
    backbone=dict(checkpoint_path=None, img_size=64, patch_size=8, depth=6, drop_path_rate=0.0),
    head=dict(num_classes=10),
)
data_preprocessor = dict(num_classes=10)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=64, padding=4),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=50, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 20
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, by_epoch=True, begin=2, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
auto_scale_lr = dict(enable=False)

default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=5))
custom_hooks = [
    dict(type='DatasetCheckHook'),
    dict(type='EpochSeedHook'),
    dict(type='AttentionRolloutHook', interval=max_epochs, num_images=4),
]
