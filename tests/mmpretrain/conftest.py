"""Digits data in the CUB / Stanford Cars / FGVC-Aircraft layouts and small DCAL configs for end-to-end runs."""
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402

from dcal_plugin.demo_data import make_demo_data  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / 'configs' / 'dcal_deit-tiny_digits-cub.py'
DATASETS = {
    'cub': dict(type='CUB', train_split='train', test_split='test'),
    'stanford_cars': dict(type='StanfordCars', train_split='train', test_split='test'),
    'fgvc_aircraft': dict(type='FGVCAircraft', train_split='trainval', test_split='test'),
}


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (tools/ is no package), to call its ``main(argv)`` in the test's process."""
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope='session')
def digits_roots(tmp_path_factory):
    """Small digits data sets (10 classes, 4 train + 2 test images each, 32×32) in the three FGVC layouts."""
    base = tmp_path_factory.mktemp('digits')
    return {layout: make_demo_data(base, layout, seed=0, image_size=32, train_per_class=4, test_per_class=2)
            for layout in DATASETS}


def small_config(data_root: Path, work_dir: Path, layout: str = 'cub', max_epochs: int = 1) -> Config:
    """The digits demo config shrunk for tests: 2 blocks, 32×32 inputs, batch 8, from random weights."""
    cfg = Config.fromfile(str(DEMO_CONFIG))
    spec = DATASETS[layout]
    cfg.model.backbone.update(img_size=32, depth=2, checkpoint_path=None)
    cfg.train_pipeline = [dict(type='DCALLoadImageFromFile'), dict(type='RandomCrop', crop_size=32, padding=2),
                          dict(type='PackInputs')]
    cfg.test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32)), dict(type='PackInputs')]
    for loader, split, pipeline in (('train_dataloader', 'train_split', cfg.train_pipeline),
                                    ('val_dataloader', 'test_split', cfg.test_pipeline)):
        cfg[loader].batch_size = 8
        cfg[loader].dataset.update(type=spec['type'], data_root=str(data_root), split=spec[split], pipeline=pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_epochs=max_epochs, val_interval=1)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.custom_hooks[-1].interval = 1
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return cfg
