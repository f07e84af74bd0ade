# Swin-T (timm swin_tiny_patch4_window7_224.ms_in1k, ImageNet-1k) as the paper's supplementary row runs it: PWCA only,
# "its windows already give locality" (METHOD §9): no GLCA, so the GLCA options of dcal.py are unused. At 448 x 448
# its stages see 112, 56, 28 and 14 tokens a side, each a multiple of the 7 x 7 windows, which keep their size (the
# relative position bias tables load unchanged).
_base_ = ['./dcal.py']

model = dict(
    backbone=dict(model_name='swin_tiny_patch4_window7_224', use_glca=False,
                  checkpoint_path='checkpoints/swin_tiny_patch4_window7_224.ms_in1k.pth'),
    head=dict(in_channels=768),
)
