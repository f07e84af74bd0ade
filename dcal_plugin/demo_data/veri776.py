"""VeRi-776 layout: VeRi/image_{train,query,test}/VVVV_cCCC_FFFFFFFF_0.jpg and name_{train,query,test}.txt."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from .files import write_lines
from .options import VeriOptions
from .plans import ID_STREAM, PlannedImage, plan_reid, write_plan
from .records import SampleRecord

FOLDER = 'VeRi'
IMAGE_DIRS = {'train': 'image_train', 'query': 'image_query', 'gallery': 'image_test'}
NAME_LISTS = {'train': 'name_train.txt', 'query': 'name_query.txt', 'gallery': 'name_test.txt'}


def write_veri776(folder: Path, seed: int, options: VeriOptions) -> list[SampleRecord]:
    """Write the three image folders and name lists; query images are also copied into image_test (as in VeRi)."""
    train_ids, test_ids = _vehicle_ids(seed, options)
    plan = [dataclasses.replace(p, label=(train_ids if p.split == 'train' else test_ids)[p.label])
            for p in plan_reid(seed, options)]
    records = write_plan(plan, seed, options, lambda _, p: folder / IMAGE_DIRS[p.split] / _file_name(p))
    records += [_copy_to_gallery(record, folder) for record in records if record.split == 'query']
    for split, list_name in NAME_LISTS.items():
        write_lines(folder / list_name, sorted(r.path.name for r in records if r.split == split))
    return records


def _vehicle_ids(seed: int, options: VeriOptions) -> tuple[list[int], list[int]]:
    """Vehicle ids in 1..N for the train and the test identities (ascending each), interleaved at random."""
    shuffled = np.random.default_rng([seed, ID_STREAM]).permutation(options.num_train_ids + options.num_test_ids) + 1
    return sorted(shuffled[:options.num_train_ids].tolist()), sorted(shuffled[options.num_train_ids:].tolist())


def _file_name(planned: PlannedImage) -> str:
    """VeRi file name, e.g. '0002_c002_00000600_0.jpg' (vehicle id, 1-based camera, frame number, index)."""
    return f'{planned.label:04d}_c{planned.camera + 1:03d}_{600 * (planned.shot + 1):08d}_0.jpg'


def _copy_to_gallery(query: SampleRecord, folder: Path) -> SampleRecord:
    """Copy a query image into image_test and return its gallery record."""
    target = folder / IMAGE_DIRS['gallery'] / query.path.name
    shutil.copyfile(query.path, target)
    return dataclasses.replace(query, path=target, split='gallery')
