"""VeRi-776 layout, as read by dcal_plugin.torchreid's VeRi776(root=<parent of VeRi/>)."""
import dataclasses
import shutil
from pathlib import Path
from typing import List, Tuple

import numpy as np

from dcal_plugin.layouts import VERI_FILE_NAME, VERI_IMAGE_DIRS, VERI_NAME_LISTS

from .files import write_lines
from .options import ReidOptions
from .plans import ID_STREAM, PlannedImage, plan_reid, write_plan
from .records import SampleRecord


def write_veri776(folder: Path, seed: int, options: ReidOptions) -> List[SampleRecord]:
    """Write the three image folders and name lists; query images are also copied into image_test (as in VeRi)."""
    train_ids, test_ids = _vehicle_ids(seed, options)
    plan = [dataclasses.replace(p, label=(train_ids if p.split == 'train' else test_ids)[p.label])
            for p in plan_reid(seed, options)]
    records = write_plan(plan, seed, options, lambda _, p: folder / VERI_IMAGE_DIRS[p.split] / _file_name(p))
    records += [_copy_to_gallery(record, folder) for record in records if record.split == 'query']
    for split, list_name in VERI_NAME_LISTS.items():
        write_lines(folder / list_name, sorted(r.path.name for r in records if r.split == split))
    return records


def _vehicle_ids(seed: int, options: ReidOptions) -> Tuple[List[int], List[int]]:
    """Vehicle ids in 1..N for the train and the test identities (ascending each), interleaved at random."""
    shuffled = np.random.default_rng([seed, ID_STREAM]).permutation(options.num_train_ids + options.num_test_ids) + 1
    return sorted(shuffled[:options.num_train_ids].tolist()), sorted(shuffled[options.num_train_ids:].tolist())


def _file_name(planned: PlannedImage) -> str:
    """VeRi file name, e.g. '0002_c002_00000600_0.jpg' (vehicle id, 1-based camera, frame number, index)."""
    return VERI_FILE_NAME.format(vehicle=planned.label, camera=planned.camera + 1, frame=600 * (planned.shot + 1),
                                 index=0)


def _copy_to_gallery(query: SampleRecord, folder: Path) -> SampleRecord:
    """Copy a query image into image_test and return its gallery record."""
    target = folder / VERI_IMAGE_DIRS['gallery'] / query.path.name
    shutil.copyfile(query.path, target)
    return dataclasses.replace(query, path=target, split='gallery')
