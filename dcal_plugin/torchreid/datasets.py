"""Datasets torchreid lacks: VeRi-776, and MSMT17 trained on its train + val lists (as TransReID trains it)."""
from pathlib import Path
from typing import List, Tuple

import torchreid

from dcal_plugin.layouts import VERI_FILE_PATTERN, VERI_FILE_REGEX, VERI_FOLDER, VERI_IMAGE_DIRS, VERI_NAME_LISTS

# What a missing path's message says the folder should hold.
EXPECTED_CONTENTS = ', '.join([f'{name}/' for name in VERI_IMAGE_DIRS.values()] + list(VERI_NAME_LISTS.values()))

Item = Tuple[str, int, int]


class VeRi776(torchreid.data.ImageDataset):
    """VeRi-776 (Liu et al., ICME 2016), official layout under ``root/VeRi``.

    Each split is the list of file names in its ``name_*.txt``, read from its image folder; a
    name gives the vehicle id and the 1-based camera id (``camid`` here is 0-based, as in
    torchreid). Train ids are relabelled ``0..N-1`` in ascending order; query and gallery keep
    the vehicle ids. Missing folders or lists, unparsable names and listed files that are absent
    raise one error each, naming the path.
    """

    dataset_dir = VERI_FOLDER

    def __init__(self, root: str = '', **kwargs) -> None:
        self.root = str(Path(root).expanduser().resolve())
        self.dataset_dir = str(Path(self.root) / VeRi776.dataset_dir)
        train, query, gallery = (read_split(Path(self.dataset_dir), split) for split in ('train', 'query', 'gallery'))
        super().__init__(relabel(train), query, gallery, **kwargs)


def read_split(folder: Path, split: str) -> List[Item]:
    """``(path, vehicle id, 0-based camera id)`` for every name listed for ``split`` ('train', 'query', 'gallery')."""
    image_dir, list_name = folder / VERI_IMAGE_DIRS[split], folder / VERI_NAME_LISTS[split]
    for path in (folder, image_dir, list_name):
        if not path.exists():
            raise FileNotFoundError(f'VeRi-776: {path} not found; expected ROOT/{VERI_FOLDER}/ with '
                                    f'{EXPECTED_CONTENTS}')
    names = [line.strip() for line in list_name.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f'VeRi-776: {list_name} lists no images')
    items = []
    for name in names:
        match = VERI_FILE_REGEX.match(name)
        if match is None:
            raise ValueError(f'VeRi-776: cannot parse {name!r} in {list_name}: expected {VERI_FILE_PATTERN} '
                             '(vehicle id, camera id, frame, index)')
        path = image_dir / name
        if not path.is_file():
            raise FileNotFoundError(f'VeRi-776: {name} is listed in {list_name} but {path} does not exist')
        items.append((str(path), int(match['vehicle']), int(match['camera']) - 1))
    return items


def relabel(items: List[Item]) -> List[Item]:
    """Replace vehicle ids by their rank ``0..N-1`` among the ids present (ascending)."""
    labels = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(path, labels[pid], camid) for path, pid, camid in items]


class MSMT17TrainVal(torchreid.data.ImageDataset):
    """MSMT17 (V1 or V2 under ``root/msmt17``) with training on ``list_train.txt`` + ``list_val.txt``.

    TransReID's MSMT17 reader trains on both lists; torchreid's ``msmt17`` trains on the train
    list only, and its ``combineall=True``, which adds the val list, then also moves query and
    gallery into training (its base class's ``combine_all``): a test on training images. This
    dataset reads the four lists with torchreid's own ``msmt17`` reader and adds the val images
    only; query and gallery are torchreid's. The val list holds other images of the train
    identities, under the same labels (1,041 identities either way).
    """

    dataset_dir = 'msmt17'

    def __init__(self, root: str = '', **kwargs) -> None:
        split = torchreid.data.datasets.image.MSMT17(root=root, verbose=False)
        val = split.process_dir(split.train_dir, split.list_val_path)
        train, query, gallery = ([item[:3] for item in items] for items in (split.train, split.query, split.gallery))
        super().__init__(train + val, query, gallery, **kwargs)
