"""``DatasetCheckHook``: fail before the first iteration when a dataset lists an image that is not on disk."""
import os

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class DatasetCheckHook(Hook):
    """Check that every image listed by the train/val (or test) dataset exists, before any work is written.

    mmpretrain's readers (``CUB``, ``StanfordCars``, ``FGVCAircraft``) read the list files but
    not the images, so a missing image would otherwise stop a run mid-epoch. The error names the
    missing file and how many others are missing.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        """Check the training and validation sets."""
        check_image_files(runner.train_dataloader.dataset)
        if runner.val_loop is not None:
            check_image_files(runner.val_loop.dataloader.dataset)

    def before_test(self, runner) -> None:
        """Check the test set."""
        check_image_files(runner.test_dataloader.dataset)


def check_image_files(dataset) -> None:
    """Raise ``FileNotFoundError`` naming the first listed ``img_path`` of an mmengine dataset that does not exist."""
    missing = [info['img_path'] for info in (dataset.get_data_info(i) for i in range(len(dataset)))
               if 'img_path' in info and not os.path.isfile(info['img_path'])]
    if missing:
        root = getattr(dataset, 'data_root', '')
        raise FileNotFoundError(f'{type(dataset).__name__} at {root}: {len(missing)} listed image(s) missing on disk, '
                                f'first: {missing[0]}')
