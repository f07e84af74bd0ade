"""Tiny digits data in the VeRi-776 and MSMT17 (V1) layouts (no torchreid needed to write them)."""
import shutil

import pytest

from dcal_plugin.demo_data import build_demo_data
from dcal_plugin.layouts import VERI_FOLDER

# 6 train ids x 4 images; 4 test ids, each 1 query + 3 gallery images from other cameras.
TINY_DATA = dict(image_size=32, digit_scale=(0.5, 0.8), clutter=0.2, num_train_ids=6, images_per_train_id=4,
                 num_test_ids=4, gallery_per_test_id=3, num_cameras=4)


@pytest.fixture(scope='session')
def veri_data(tmp_path_factory):
    """DemoData of the tiny VeRi-776 set (root holds VeRi/); do not modify it (copy it with ``veri_copy``)."""
    return build_demo_data(tmp_path_factory.mktemp('veri'), 'veri776', **TINY_DATA)


@pytest.fixture(scope='session')
def msmt_data(tmp_path_factory):
    """DemoData of the tiny MSMT17 V1 set (root holds msmt17/MSMT17_V1/)."""
    return build_demo_data(tmp_path_factory.mktemp('msmt'), 'msmt17', **TINY_DATA)


@pytest.fixture
def veri_copy(veri_data, tmp_path):
    """A private copy of the tiny VeRi-776 set that a test may break: the path of its VeRi/ folder."""
    return shutil.copytree(veri_data.root / VERI_FOLDER, tmp_path / VERI_FOLDER)

