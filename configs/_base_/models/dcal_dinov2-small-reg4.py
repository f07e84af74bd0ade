# DINOv2 ViT-S/14 with 4 registers, self-supervised on LVD-142M (timm vit_small_patch14_reg4_dinov2.lvd142m) [beyond
# the paper]. Patch 14: at 392 x 392 its grid is the paper's 28 x 28 patches at 448 with patch 16. The 4 registers
# and the class token take part in every attention and in the rollout; GLCA's queries are patches only.
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='vit_small_patch14_reg4_dinov2', img_size=392,
                  checkpoint_path='checkpoints/vit_small_patch14_reg4_dinov2.lvd142m.pth'),
    head=dict(in_channels=384),
)
