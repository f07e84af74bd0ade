"""MSMT17 V1 layout, as read by torchreid's MSMT17(root=<parent of msmt17/>)."""
from __future__ import annotations

from pathlib import Path

from .files import write_lines
from .options import MsmtOptions
from .plans import PlannedImage, plan_reid, write_plan
from .records import SampleRecord

FOLDER = 'msmt17'
MAIN_DIR = 'MSMT17_V1'
IMAGE_DIRS = {'train': 'train', 'val': 'train', 'query': 'test', 'gallery': 'test'}
DAYTIMES = ('0113morning', '0113noon', '0113afternoon', '0302morning', '0302noon', '0302afternoon')


def write_msmt17(folder: Path, seed: int, options: MsmtOptions) -> list[SampleRecord]:
    """Write MSMT17_V1/{train,test}/PPPP/*.jpg and list_{train,val,query,gallery}.txt ('<PPPP/name> <pid>')."""
    main = folder / MAIN_DIR
    plan = plan_reid(seed, options, val_per_train_id=options.val_per_train_id)
    relative = [_relative_path(planned) for planned in plan]
    records = write_plan(plan, seed, options, lambda index, p: main / IMAGE_DIRS[p.split] / relative[index])
    for split in IMAGE_DIRS:
        write_lines(main / f'list_{split}.txt',
                    (f'{path} {r.label}' for path, r in zip(relative, records) if r.split == split))
    return records


def _relative_path(planned: PlannedImage) -> str:
    """'PPPP/PPPP_SSS_CC_<date><daytime>_FFFF_0.jpg': pid, shot, 1-based camera, capture time, frame."""
    pid = f'{planned.label:04d}'
    daytime = DAYTIMES[planned.shot % len(DAYTIMES)]
    return f'{pid}/{pid}_{planned.shot:03d}_{planned.camera + 1:02d}_{daytime}_{17 * planned.shot + 15:04d}_0.jpg'
