"""MSMT17 V1 layout, as read by torchreid's MSMT17(root=<parent of msmt17/>)."""
from pathlib import Path
from typing import List

from dcal_plugin.layouts import MSMT_FILE_NAME, MSMT_IMAGE_DIRS, MSMT_LISTS, MSMT_MAIN_DIR

from .files import write_lines
from .options import ReidOptions
from .plans import PlannedImage, plan_reid, write_plan
from .records import SampleRecord

DAYTIMES = ('0113morning', '0113noon', '0113afternoon', '0302morning', '0302noon', '0302afternoon')


def write_msmt17(folder: Path, seed: int, options: ReidOptions) -> List[SampleRecord]:
    """Write MSMT17_V1/{train,test}/PPPP/*.jpg and list_{train,val,query,gallery}.txt ('<PPPP/name> <pid>')."""
    main = folder / MSMT_MAIN_DIR
    plan = plan_reid(seed, options, val_per_train_id=options.val_per_train_id)
    relative = [_relative_path(planned) for planned in plan]
    records = write_plan(plan, seed, options, lambda index, p: main / MSMT_IMAGE_DIRS[p.split] / relative[index])
    for split, list_name in MSMT_LISTS.items():
        write_lines(main / list_name, (f'{path} {r.label}' for path, r in zip(relative, records) if r.split == split))
    return records


def _relative_path(planned: PlannedImage) -> str:
    """'PPPP/PPPP_SSS_CC_<date><daytime>_FFFF_0.jpg': pid, shot, 1-based camera, capture time, frame."""
    return MSMT_FILE_NAME.format(pid=planned.label, shot=planned.shot, camera=planned.camera + 1,
                                 daytime=DAYTIMES[planned.shot % len(DAYTIMES)], frame=17 * planned.shot + 15)
