# DINOv2 ViT-B/14 with 4 registers, self-supervised on LVD-142M (timm vit_base_patch14_reg4_dinov2.lvd142m) [beyond
# the paper]. At 392 x 392: the paper's 28 x 28 patch grid (see dcal_dinov2-small-reg4.py).
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='vit_base_patch14_reg4_dinov2', img_size=392,
                  checkpoint_path='checkpoints/vit_base_patch14_reg4_dinov2.lvd142m.pth'),
    head=dict(in_channels=768),
)
