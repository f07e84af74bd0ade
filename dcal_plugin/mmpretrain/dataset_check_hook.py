"""``DatasetCheckHook``: fail before the first iteration on data that would stop or spoil a run later."""
import os

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ..image_check import DECODED_SAMPLE, check_images
from .unwrap import unwrap


@HOOKS.register_module()
class DatasetCheckHook(Hook):
    """Check the data sets against the model before any work is written.

    mmpretrain's readers (``CUB``, ``StanfordCars``, ``FGVCAircraft``) read the list files but not
    the images, so a missing or corrupt image would otherwise stop a run mid-epoch. Before training:
    every listed image of the train and val sets exists and looks whole, and ``decoded_sample``
    of each set decode in full (:func:`~dcal_plugin.image_check.check_images`); the head's
    ``num_classes`` is the training set's number of classes; and no epoch ends in a batch of one
    image, which PWCA cannot pair. Before testing: the test set's images. Each error names the file
    or the setting to change.
    """

    priority = 'VERY_HIGH'

    def __init__(self, decoded_sample: int = DECODED_SAMPLE) -> None:
        self.decoded_sample = decoded_sample

    def before_train(self, runner) -> None:
        """Check the training and validation sets, the classes and the last batch."""
        loader = runner.train_dataloader
        check_image_files(loader.dataset, self.decoded_sample)
        model = unwrap(runner.model)
        check_num_classes(model, loader.dataset)
        check_last_batch(model, loader)
        if runner.val_loop is not None:
            check_image_files(runner.val_loop.dataloader.dataset, self.decoded_sample)

    def before_test(self, runner) -> None:
        """Check the test set."""
        check_image_files(runner.test_dataloader.dataset, self.decoded_sample)


def check_image_files(dataset, decoded_sample: int = DECODED_SAMPLE) -> None:
    """Raise naming the first listed ``img_path`` of an mmengine dataset that is missing (``FileNotFoundError``) or
    corrupt."""
    paths = [info['img_path'] for info in (dataset.get_data_info(i) for i in range(len(dataset))) if 'img_path' in info]
    what = f'{type(dataset).__name__} at {getattr(dataset, "data_root", "")}'
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f'{what}: {len(missing)} listed image(s) missing on disk, first: {missing[0]}')
    check_images(paths, what, decoded_sample)


def check_num_classes(model, dataset) -> None:
    """Raise ``ValueError`` unless the DCAL head's ``num_classes`` is 1 + the largest label of ``dataset``.

    The labels, not the data set's class names, decide: mmpretrain's ``CUB`` names 200 classes
    whatever its lists hold.
    """
    head = getattr(model, 'head', None)
    if head is None or not hasattr(head, 'sa_fc'):
        return
    labels = {int(dataset.get_data_info(i)['gt_label']) for i in range(len(dataset))}
    num_classes, data_classes = head.sa_fc.out_features, max(labels, default=-1) + 1
    if num_classes != data_classes:
        raise ValueError(f'the head has num_classes={num_classes} but the training set {type(dataset).__name__} has '
                         f'labels 0..{data_classes - 1} ({data_classes} classes, {len(labels)} of them with images): '
                         f'set model.head.num_classes={data_classes}')


def check_last_batch(model, loader) -> None:
    """Raise ``ValueError`` when an epoch would end in a batch of one image and the model trains PWCA."""
    backbone = getattr(model, 'backbone', None)
    if not getattr(getattr(backbone, 'dcal', None), 'use_pwca', False) or loader.batch_size is None:
        return
    samples = len(loader.sampler)
    if not loader.drop_last and samples % loader.batch_size == 1:
        raise ValueError(f'each epoch would end in a batch of 1 image ({samples} images per process, batch '
                         f'{loader.batch_size}), which PWCA cannot pair with another: set '
                         'train_dataloader.drop_last=True or change the batch size')
