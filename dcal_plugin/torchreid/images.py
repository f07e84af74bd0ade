"""Re-ID images checked before training, and read during it with errors that name the file.

torchreid's ``read_image`` retries a file PIL cannot read forever, printing a line per try (a
zero-byte image wrote 1 M lines a minute). :func:`images_read_or_named` replaces it, for the
duration of a run, by :func:`dcal_plugin.image_check.read_image`, which raises naming the file.
"""
import contextlib
from typing import Iterator

import torchreid

from ..image_check import check_images, read_image

_DATASET_MODULE = torchreid.data.datasets.dataset  # where torchreid's ImageDataset looks read_image up


def check_datamanager_images(datamanager: torchreid.data.ImageDataManager) -> None:
    """Raise ``CorruptImageError`` naming the first bad images of the train set and each test set's query and
    gallery."""
    check_images([item[0] for item in datamanager.train_loader.dataset.data], 'the Re-ID train set')
    for name, splits in datamanager.test_dataset.items():
        for split, items in splits.items():
            check_images([item[0] for item in items], f'{name} {split}')


@contextlib.contextmanager
def images_read_or_named() -> Iterator[None]:
    """Within the context, torchreid's datasets read images with :func:`~dcal_plugin.image_check.read_image`."""
    original = _DATASET_MODULE.read_image
    _DATASET_MODULE.read_image = read_image
    try:
        yield
    finally:
        _DATASET_MODULE.read_image = original
