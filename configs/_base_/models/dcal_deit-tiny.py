_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='deit_tiny_patch16_224', checkpoint_path='checkpoints/deit_tiny_patch16_224.pth'),
    head=dict(in_channels=192),
)
