# DeiT-Small, ImageNet-1k (timm deit_small_patch16_224.fb_in1k, the paper's DeiT weights)
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='deit_small_patch16_224',
                  checkpoint_path='checkpoints/deit_small_patch16_224.fb_in1k.pth'),
    head=dict(in_channels=384),
)
