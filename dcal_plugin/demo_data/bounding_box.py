"""Market-1501 and DukeMTMC-reID layouts, as read by torchreid's Market1501 / DukeMTMCreID(root=<parent of folder>)."""
from pathlib import Path
from typing import List

from dcal_plugin.layouts import BOUNDING_BOX_DIRS, BoundingBoxLayout

from .options import ReidOptions
from .plans import plan_reid_with_disjoint_ids, write_plan
from .records import SampleRecord


def write_bounding_box_layout(folder: Path, seed: int, options: ReidOptions,
                              layout: BoundingBoxLayout) -> List[SampleRecord]:
    """Write <main_dir>/{bounding_box_train,query,bounding_box_test}/ with person ids 1..N and 1-based cameras."""
    main = folder / layout.main_dir

    def path(_, planned) -> Path:
        name = layout.file_name.format(pid=planned.label, camera=planned.camera + 1, frame=600 * (planned.shot + 1))
        return main / BOUNDING_BOX_DIRS[planned.split] / name

    return write_plan(plan_reid_with_disjoint_ids(seed, options), seed, options, path)
