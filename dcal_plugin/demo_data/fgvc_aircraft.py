"""FGVC-Aircraft 2013b layout, as read by mmpretrain's FGVCAircraft(data_root=<folder>, split=...)."""
import dataclasses
from pathlib import Path
from typing import List, Tuple

from dcal_plugin.layouts import (AIRCRAFT_BOXES, AIRCRAFT_DATA_DIR, AIRCRAFT_IMAGE_DIR, AIRCRAFT_LISTS,
                                 AIRCRAFT_SPLIT_LISTS, AIRCRAFT_VARIANT_LIST, AIRCRAFT_VARIANTS)

from .files import write_lines
from .options import FgvcOptions
from .plans import PlannedImage, plan_fgvc, write_plan
from .records import SampleRecord

# The first ten FGVC-Aircraft variants, in variants.txt order; digit d is variant d (mmpretrain maps names to ids).
VARIANTS = ('707-320', '727-200', '737-200', '737-300', '737-400', '737-500', '737-600', '737-700', '737-800',
            '737-900')


def write_fgvc_aircraft(folder: Path, seed: int, options: FgvcOptions) -> List[SampleRecord]:
    """Write data/images/NNNNNNN.jpg, images_variant_{train,val,trainval,test}.txt, variants.txt, images_box.txt."""
    plan = [_train_or_val(planned) for planned in plan_fgvc(seed, options)]
    names = [f'{index + 1:07d}' for index in range(len(plan))]
    data = folder / AIRCRAFT_DATA_DIR
    records = write_plan(plan, seed, options, lambda index, _: data / AIRCRAFT_IMAGE_DIR / f'{names[index]}.jpg')
    for variant_list in AIRCRAFT_LISTS:
        write_lines(data / AIRCRAFT_VARIANT_LIST.format(variant_list),
                    (f'{name} {VARIANTS[r.label]}' for name, r in zip(names, records)
                     if variant_list in AIRCRAFT_SPLIT_LISTS[r.split]))
    write_lines(data / AIRCRAFT_VARIANTS, VARIANTS)
    write_lines(data / AIRCRAFT_BOXES, (f'{name} {_aircraft_box(r.box)}' for name, r in zip(names, records)))
    return records


def _train_or_val(planned: PlannedImage) -> PlannedImage:
    """Send every second training shot of a class to 'val' (FGVC's trainval = train + val)."""
    if planned.split == 'train' and planned.shot % 2 == 1:
        return dataclasses.replace(planned, split='val')
    return planned


def _aircraft_box(box: Tuple[int, int, int, int]) -> str:
    """FGVC box text '<xmin> <ymin> <xmax> <ymax>', 1-based inclusive pixel coordinates."""
    x, y, w, h = box
    return f'{x + 1} {y + 1} {x + w} {y + h}'
