_base_ = [
    './_base_/models/dcal_vit.py', './_base_/datasets/dcal_cars.py',
    './_base_/schedules/dcal_fgvc_100e.py', './_base_/dcal_runtime.py',
]

model = dict(head=dict(num_classes=196))
