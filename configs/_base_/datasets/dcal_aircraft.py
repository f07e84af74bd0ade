# FGVC-Aircraft (variants) through mmpretrain's FGVCAircraft reader, trained on trainval,
# with the CUB recipe's pipeline and batch size.
_base_ = ['./dcal_cub.py']

data_preprocessor = dict(num_classes=100)
train_dataloader = dict(dataset=dict(type='FGVCAircraft', data_root='data/fgvc_aircraft', split='trainval'))
val_dataloader = dict(dataset=dict(type='FGVCAircraft', data_root='data/fgvc_aircraft', split='test'))
test_dataloader = val_dataloader
