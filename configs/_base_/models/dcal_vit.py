# ViT-B/16, Google's original ImageNet-21k weights (timm vit_base_patch16_224.orig_in21k): the paper's "ViT on
# ImageNet-21k", the file the FGVC ViT work of its time (TransFG) fine-tunes. timm's augreg_* weights are later.
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='vit_base_patch16_224', checkpoint_path='checkpoints/vit_base_patch16_224.orig_in21k.pth'),
    head=dict(in_channels=768),
    # these timm weights are trained on inputs normalised with mean = std = 0.5
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           to_rgb=True),
)
