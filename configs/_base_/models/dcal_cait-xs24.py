# CaiT-XS24 with DCAL, the paper's supplementary row (METHOD §9). Weights: timm cait_xs24_384.fb_dist_in1k (ImageNet-1k
# with distillation, the only XS24 in timm), position embeddings resized from its 24 x 24 patches to 28 x 28 at 448 on
# load. The class token enters only in CaiT's two class-attention blocks: the rollout follows it through them and on
# through the talking-heads blocks, and GLCA is a copy of the last class-attention block with the R selected patches
# as queries (dcal_plugin/core/dcal_cait.py argues both), so dcal.py's glca_block_index must stay -1.
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='cait_xs24_384', checkpoint_path='checkpoints/cait_xs24_384.fb_dist_in1k.pth'),
    head=dict(in_channels=288),
)
