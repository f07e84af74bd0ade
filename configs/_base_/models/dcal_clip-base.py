# CLIP ViT-B/16, OpenAI's image tower (timm vit_base_patch16_clip_224.openai) [beyond the paper]: at 448 the paper's
# 28 x 28 patches. CLIP normalises images with its own statistics: OpenAI's mean and std in a config's
# data_preprocessor (see dcal_clip-base_cub.py; a dataset base sets ImageNet's).
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='vit_base_patch16_clip_224',
                  checkpoint_path='checkpoints/vit_base_patch16_clip_224.openai.pth'),
    head=dict(in_channels=768),
)
