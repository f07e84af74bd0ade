"""What the generator wrote: one record per image, and the dataset root they belong to."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple


@dataclass(frozen=True)
class SampleRecord:
    """One written image: absolute path, split, label (0-based class, or the pid/vehicle id as written), sources."""

    path: Path
    split: str
    label: int
    camera: Optional[int]  # 0-based camera (rendering style) index; None for classification layouts
    source_index: int  # index into sklearn.datasets.load_digits() of the deciding digit
    box: Tuple[int, int, int, int]  # (x, y, w, h) pixel box of the deciding digit, 0-based top-left
    square: Tuple[int, int, int]  # (x, y, side) square the 8x8 source digit was scaled into


@dataclass(frozen=True)
class DemoData:
    """A generated dataset: layout name, root to hand to the toolbox's reader class, records in write order."""

    layout: str
    root: Path
    records: Tuple[SampleRecord, ...]

    def split(self, name: str) -> Tuple[SampleRecord, ...]:
        """Records of one split ('train', 'val', 'test', 'query', 'gallery'), in write order."""
        return tuple(record for record in self.records if record.split == name)

    def split_names(self) -> Tuple[str, ...]:
        """Split names in order of first appearance."""
        return tuple(dict.fromkeys(record.split for record in self.records))
