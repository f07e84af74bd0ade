"""CUB-200-2011 layout, as read by mmpretrain's CUB(data_root=<folder>, split='train'|'test')."""
from pathlib import Path
from typing import List, Tuple

from dcal_plugin.layouts import CUB_BOXES, CUB_CLASSES, CUB_IMAGE_DIR, CUB_IMAGES, CUB_LABELS, CUB_SPLIT

from .files import write_lines
from .options import FgvcOptions
from .plans import PlannedImage, plan_fgvc, write_plan
from .records import SampleRecord

# The first ten CUB-200-2011 species, in classes.txt order; digit d is species d + 1.
CLASS_NAMES = (
    'Black_footed_Albatross', 'Laysan_Albatross', 'Sooty_Albatross', 'Groove_billed_Ani', 'Crested_Auklet',
    'Least_Auklet', 'Parakeet_Auklet', 'Rhinoceros_Auklet', 'Brewer_Blackbird', 'Red_winged_Blackbird',
)


def write_cub(folder: Path, seed: int, options: FgvcOptions) -> List[SampleRecord]:
    """Write images/<NNN.Class>/*.jpg and CUB's 1-based id files (images, labels, split, classes, boxes)."""
    plan = plan_fgvc(seed, options)
    relative = [_relative_path(index, planned) for index, planned in enumerate(plan)]
    records = write_plan(plan, seed, options, lambda index, _: folder / CUB_IMAGE_DIR / relative[index])
    ids = range(1, len(records) + 1)
    write_lines(folder / CUB_IMAGES, (f'{i} {path}' for i, path in zip(ids, relative)))
    write_lines(folder / CUB_LABELS, (f'{i} {r.label + 1}' for i, r in zip(ids, records)))
    write_lines(folder / CUB_SPLIT, (f'{i} {int(r.split == "train")}' for i, r in zip(ids, records)))
    write_lines(folder / CUB_CLASSES, (f'{c + 1} {_class_folder(c)}' for c in range(len(CLASS_NAMES))))
    write_lines(folder / CUB_BOXES, (f'{i} {_cub_box(r.box)}' for i, r in zip(ids, records)))
    return records


def _cub_box(box: Tuple[int, int, int, int]) -> str:
    """CUB box text '<x> <y> <width> <height>' (floats; x, y = 0-based top-left pixel)."""
    return ' '.join(f'{float(v):.1f}' for v in box)


def _class_folder(label: int) -> str:
    """CUB class folder name, e.g. '001.Black_footed_Albatross' for label 0."""
    return f'{label + 1:03d}.{CLASS_NAMES[label]}'


def _relative_path(index: int, planned: PlannedImage) -> str:
    """Path under images/, e.g. '001.Black_footed_Albatross/Black_footed_Albatross_0001_1234.jpg'."""
    return f'{_class_folder(planned.label)}/{CLASS_NAMES[planned.label]}_{index + 1:04d}_{planned.source_index}.jpg'
