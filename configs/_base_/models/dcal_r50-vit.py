# R50+ViT-B/16 hybrid, Google's original ImageNet-21k weights (timm vit_base_r50_s16_224.orig_in21k), as TransFG.
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='vit_base_r50_s16_224', checkpoint_path='checkpoints/vit_base_r50_s16_224.orig_in21k.pth'),
    head=dict(in_channels=768),
    # these timm weights are trained on inputs normalised with mean = std = 0.5
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           to_rgb=True),
)
