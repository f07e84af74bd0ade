"""Stanford Cars layout (car_ims/ + cars_annos.mat), as read by mmpretrain's StanfordCars(data_root=<folder>)."""
from pathlib import Path
from typing import List, Tuple

import numpy as np

from dcal_plugin.layouts import CARS_ANNOTATIONS, CARS_IMAGE_DIR

from .files import save_mat
from .options import FgvcOptions
from .plans import plan_fgvc, write_plan
from .records import SampleRecord

# The first ten Stanford Cars classes, in cars_meta order; digit d is class d + 1.
CLASS_NAMES = (
    'AM General Hummer SUV 2000', 'Acura RL Sedan 2012', 'Acura TL Sedan 2012', 'Acura TL Type-S 2008',
    'Acura TSX Sedan 2012', 'Acura Integra Type R 2001', 'Acura ZDX Hatchback 2012',
    'Aston Martin V8 Vantage Convertible 2012', 'Aston Martin V8 Vantage Coupe 2012',
    'Aston Martin Virage Convertible 2012',
)
ANNOTATION_FIELDS = ('relative_im_path', 'bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'test')


def write_stanford_cars(folder: Path, seed: int, options: FgvcOptions) -> List[SampleRecord]:
    """Write car_ims/NNNNNN.jpg and cars_annos.mat (1xN 'annotations' struct, 1-based class, test flag)."""
    plan = plan_fgvc(seed, options)
    relative = [f'{CARS_IMAGE_DIR}/{index + 1:06d}.jpg' for index in range(len(plan))]
    records = write_plan(plan, seed, options, lambda index, _: folder / relative[index])
    annotations = np.zeros((1, len(records)), dtype=[(name, object) for name in ANNOTATION_FIELDS])
    for column, (path, record) in enumerate(zip(relative, records)):
        annotations[0, column] = (path, *_matlab_box(record.box), _uint8(record.label + 1),
                                  _uint8(record.split == 'test'))
    class_names = np.empty((1, len(CLASS_NAMES)), dtype=object)
    class_names[0, :] = CLASS_NAMES
    save_mat(folder / CARS_ANNOTATIONS, {'annotations': annotations, 'class_names': class_names})
    return records


def _matlab_box(box: Tuple[int, int, int, int]) -> Tuple[np.ndarray, ...]:
    """(x1, y1, x2, y2) as 1x1 doubles, 1-based inclusive pixel coordinates (MATLAB convention)."""
    x, y, w, h = box
    return tuple(np.array([[float(v)]]) for v in (x + 1, y + 1, x + w, y + h))


def _uint8(value: int) -> np.ndarray:
    """A 1x1 uint8 MATLAB scalar."""
    return np.array([[value]], dtype=np.uint8)
