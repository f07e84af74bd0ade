# [beyond the paper: no paper number] the paper's FGVC recipe on CLIP ViT-B/16, CUB-200-2011 at 448 x 448
_base_ = [
    './_base_/models/dcal_clip-base.py', './_base_/datasets/dcal_cub.py',
    './_base_/schedules/dcal_fgvc_100e.py', './_base_/dcal_runtime.py',
]

model = dict(head=dict(num_classes=200))
# CLIP's image statistics (OpenAI's mean and std, x 255 for mmpretrain's preprocessor), not ImageNet's
data_preprocessor = dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323], to_rgb=True)
