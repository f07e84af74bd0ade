# Stanford Cars through mmpretrain's StanfordCars reader (cars_annos.mat + car_ims/, or devkit/ + cars_{train,test}/),
# with the CUB recipe's pipeline and batch size.
_base_ = ['./dcal_cub.py']

data_preprocessor = dict(num_classes=196)
train_dataloader = dict(dataset=dict(type='StanfordCars', data_root='data/stanfordcars', split='train'))
val_dataloader = dict(dataset=dict(type='StanfordCars', data_root='data/stanfordcars', split='test'))
test_dataloader = val_dataloader
