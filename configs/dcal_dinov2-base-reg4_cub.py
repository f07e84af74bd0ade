# [beyond the paper: no paper number] the paper's FGVC recipe on DINOv2 with registers, CUB-200-2011 at 392 x 392
_base_ = [
    './_base_/models/dcal_dinov2-base-reg4.py', './_base_/datasets/dcal_cub_392.py',
    './_base_/schedules/dcal_fgvc_100e.py', './_base_/dcal_runtime.py',
]

model = dict(head=dict(num_classes=200))
