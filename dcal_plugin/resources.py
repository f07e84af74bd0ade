"""Where the shipped configs and tools are: inside the package when installed from a wheel, else the source tree.

A wheel holds them at ``dcal_plugin/.mim/{configs,tools}`` (OpenMMLab's layout, where ``mim`` looks;
``setup.py`` copies them there); a clone or an editable install reads the repository's own
``configs/`` and ``tools/`` beside the package.
"""
from pathlib import Path
from typing import List

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED = ('configs', 'tools')  # the folders a wheel carries under .mim/
CONFIG_SUFFIXES = ('.py', '.yaml')
# The built-in pretrained ViT, shipped with the configs (the demo config names it relative to itself): timm's DeiT-Tiny
# layout, 4 blocks, 8x8 patches, 32x32, trained on the digit pairs by tools/pretrain_source_vit.py
BUILTIN_CHECKPOINT = Path('_pretrained_', 'deit-tiny-p8-d4_digit-pairs.pth')  # under configs/


def shipped_dir(name: str) -> Path:
    """The folder ``configs`` or ``tools``: ``.mim/NAME`` in an installed wheel, else the source tree's ``NAME``."""
    if name not in SHIPPED:
        raise ValueError(f'no shipped folder {name!r}; choose one of {SHIPPED}')
    for candidate in (PACKAGE_DIR / '.mim' / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f'dcal_plugin\'s {name}/ is neither at {PACKAGE_DIR / ".mim" / name} (installed wheel) '
                            f'nor at {PACKAGE_DIR.parent / name} (source tree): reinstall dcal-plugin')


def config_names() -> List[str]:
    """Every shipped config, by its path relative to ``configs/`` (e.g. ``dcal_vit_cub.py``,
    ``reid/dcal_vit_veri776.yaml``)."""
    root = shipped_dir('configs')
    return sorted(str(path.relative_to(root)) for path in root.rglob('*')
                  if path.suffix in CONFIG_SUFFIXES and '_base_' not in path.relative_to(root).parts)


def config_path(name: str) -> Path:
    """A shipped config by name, with or without its suffix and ``reid/`` (``dcal_vit_cub``, ``dcal_vit_veri776``)."""
    names = config_names()
    matches = [known for known in names if name in (known, Path(known).with_suffix('').as_posix(),
                                                    Path(known).name, Path(known).stem)]
    if len(matches) != 1:
        problem = 'is ambiguous' if matches else 'is not a shipped config'
        raise ValueError(f'{name!r} {problem}; the configs are: {", ".join(names)}')
    return shipped_dir('configs') / matches[0]


def builtin_checkpoint() -> Path:
    """The built-in pretrained ViT's file (a timm state_dict); its record is the ``.json`` beside it."""
    path = shipped_dir('configs') / BUILTIN_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f'the built-in pretrained ViT {path} is missing: write it with '
                                f'python tools/pretrain_source_vit.py {path} (make pretrained)')
    return path


def tool_path(name: str) -> Path:
    """A shipped tool script by its file name (``train.py``)."""
    path = shipped_dir('tools') / name
    if not path.is_file():
        raise FileNotFoundError(f'no tool {name} in {path.parent}')
    return path
