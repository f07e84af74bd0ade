"""Built-in demo data: real sklearn handwritten digits on cluttered canvases, written in official dataset layouts."""
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Type, Union

from dcal_plugin.layouts import (AIRCRAFT_FOLDER, CARS_FOLDER, CUB_FOLDER, DUKEMTMC_REID, MARKET1501, MSMT_FOLDER,
                                 MSMT_MAX_CAMERAS, VERI_FOLDER, VERI_MAX_CAMERAS, BoundingBoxLayout)

from . import bounding_box, cub, fgvc_aircraft, msmt17, stanford_cars, veri776
from .options import FgvcOptions, ReidOptions, RenderOptions, check_cameras, parse_options
from .records import DemoData, SampleRecord

__all__ = ['LAYOUTS', 'DemoData', 'SampleRecord', 'build_demo_data', 'make_demo_data']


@dataclass(frozen=True)
class _Layout:
    """A layout: folder under ROOT, options type, writer, whether readers take ROOT (not the folder), camera limit."""

    folder: str
    options_type: Type[RenderOptions]
    write: Callable[[Path, int, Any], List[SampleRecord]]
    reader_takes_parent: bool
    max_cameras: Optional[int] = None  # re-ID: the largest 1-based camera id its file names hold
    unused_options: Tuple[str, ...] = ()  # fields of options_type that this layout does not take


def _bounding_box_layout(layout: BoundingBoxLayout) -> _Layout:
    """The generator entry of a Market-1501-style layout."""
    write = functools.partial(bounding_box.write_bounding_box_layout, layout=layout)
    return _Layout(layout.folder, ReidOptions, write, True, layout.max_cameras, ('val_per_train_id',))


_LAYOUTS = {
    'cub': _Layout(CUB_FOLDER, FgvcOptions, cub.write_cub, False),
    'stanford_cars': _Layout(CARS_FOLDER, FgvcOptions, stanford_cars.write_stanford_cars, False),
    'fgvc_aircraft': _Layout(AIRCRAFT_FOLDER, FgvcOptions, fgvc_aircraft.write_fgvc_aircraft, False),
    'veri776': _Layout(VERI_FOLDER, ReidOptions, veri776.write_veri776, True, VERI_MAX_CAMERAS, ('val_per_train_id',)),
    'msmt17': _Layout(MSMT_FOLDER, ReidOptions, msmt17.write_msmt17, True, MSMT_MAX_CAMERAS),
    'market1501': _bounding_box_layout(MARKET1501),
    'dukemtmcreid': _bounding_box_layout(DUKEMTMC_REID),
}
LAYOUTS = tuple(_LAYOUTS)


def build_demo_data(root: Union[str, Path], layout: str, seed: int = 0, overwrite: bool = False,
                    **options: Any) -> DemoData:
    """Write layout's demo dataset under root and return its reader root plus one record per image."""
    if layout not in _LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; choose one of {", ".join(LAYOUTS)}')
    spec = _LAYOUTS[layout]
    parsed = parse_options(spec.options_type, options, spec.unused_options)
    if spec.max_cameras is not None:
        check_cameras(parsed, spec.max_cameras, layout)
    root = Path(root).expanduser().resolve()
    folder = root / spec.folder
    _clear(folder, overwrite)
    records = spec.write(folder, seed, parsed)
    return DemoData(layout=layout, root=root if spec.reader_takes_parent else folder, records=tuple(records))


def make_demo_data(root: Union[str, Path], layout: str, seed: int = 0, overwrite: bool = False,
                   **options: Any) -> Path:
    """Write layout's demo dataset under root; return the root its toolbox dataset class should be given."""
    return build_demo_data(root, layout, seed, overwrite, **options).root


def _clear(folder: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty layout folder unless overwrite, in which case remove that folder only."""
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f'{folder} is not empty; pass overwrite=True (CLI: --overwrite) to replace it')
        shutil.rmtree(folder)
