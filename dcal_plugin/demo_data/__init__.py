"""Built-in demo data: real sklearn handwritten digits on cluttered canvases, written in official dataset layouts."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cub, fgvc_aircraft, msmt17, stanford_cars, veri776
from .options import FgvcOptions, MsmtOptions, RenderOptions, VeriOptions, parse_options
from .records import DemoData, SampleRecord

__all__ = ['LAYOUTS', 'DemoData', 'SampleRecord', 'build_demo_data', 'make_demo_data']


@dataclass(frozen=True)
class _Layout:
    """A layout: its folder under ROOT, options type, writer, and whether readers take ROOT (not the folder)."""

    folder: str
    options_type: type[RenderOptions]
    write: Callable[[Path, int, Any], list[SampleRecord]]
    reader_takes_parent: bool


_LAYOUTS = {
    'cub': _Layout(cub.FOLDER, FgvcOptions, cub.write_cub, False),
    'stanford_cars': _Layout(stanford_cars.FOLDER, FgvcOptions, stanford_cars.write_stanford_cars, False),
    'fgvc_aircraft': _Layout(fgvc_aircraft.FOLDER, FgvcOptions, fgvc_aircraft.write_fgvc_aircraft, False),
    'veri776': _Layout(veri776.FOLDER, VeriOptions, veri776.write_veri776, True),
    'msmt17': _Layout(msmt17.FOLDER, MsmtOptions, msmt17.write_msmt17, True),
}
LAYOUTS = tuple(_LAYOUTS)


def build_demo_data(root: str | Path, layout: str, seed: int = 0, overwrite: bool = False,
                    **options: Any) -> DemoData:
    """Write layout's demo dataset under root and return its reader root plus one record per image."""
    if layout not in _LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; choose one of {", ".join(LAYOUTS)}')
    spec = _LAYOUTS[layout]
    parsed = parse_options(spec.options_type, options)
    root = Path(root).expanduser().resolve()
    folder = root / spec.folder
    _clear(folder, overwrite)
    records = spec.write(folder, seed, parsed)
    return DemoData(layout=layout, root=root if spec.reader_takes_parent else folder, records=tuple(records))


def make_demo_data(root: str | Path, layout: str, seed: int = 0, overwrite: bool = False, **options: Any) -> Path:
    """Write layout's demo dataset under root; return the root its toolbox dataset class should be given."""
    return build_demo_data(root, layout, seed, overwrite, **options).root


def _clear(folder: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty layout folder unless overwrite, in which case remove that folder only."""
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f'{folder} is not empty; pass overwrite=True (CLI: --overwrite) to replace it')
        shutil.rmtree(folder)
