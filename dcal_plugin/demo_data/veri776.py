"""VeRi-776 layout, as read by dcal_plugin.torchreid's VeRi776(root=<parent of VeRi/>)."""
import dataclasses
import shutil
from pathlib import Path
from typing import List

from dcal_plugin.layouts import VERI_FILE_NAME, VERI_IMAGE_DIRS, VERI_NAME_LISTS

from .files import write_lines
from .options import ReidOptions
from .plans import PlannedImage, plan_reid_with_disjoint_ids, write_plan
from .records import SampleRecord


def write_veri776(folder: Path, seed: int, options: ReidOptions) -> List[SampleRecord]:
    """Write the three image folders and name lists; query images are also copied into image_test (as in VeRi)."""
    plan = plan_reid_with_disjoint_ids(seed, options)
    records = write_plan(plan, seed, options, lambda _, p: folder / VERI_IMAGE_DIRS[p.split] / _file_name(p))
    records += [_copy_to_gallery(record, folder) for record in records if record.split == 'query']
    for split, list_name in VERI_NAME_LISTS.items():
        write_lines(folder / list_name, sorted(r.path.name for r in records if r.split == split))
    return records


def _file_name(planned: PlannedImage) -> str:
    """VeRi file name, e.g. '0002_c002_00000600_0.jpg' (vehicle id, 1-based camera, frame number, index)."""
    return VERI_FILE_NAME.format(vehicle=planned.label, camera=planned.camera + 1, frame=600 * (planned.shot + 1),
                                 index=0)


def _copy_to_gallery(query: SampleRecord, folder: Path) -> SampleRecord:
    """Copy a query image into image_test and return its gallery record."""
    target = folder / VERI_IMAGE_DIRS['gallery'] / query.path.name
    shutil.copyfile(query.path, target)
    return dataclasses.replace(query, path=target, split='gallery')
