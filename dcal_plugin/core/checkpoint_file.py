"""Checkpoint files read with errors that say what the file is and what was expected.

torch's own errors for a file that is not a checkpoint name neither: ``PytorchStreamReader failed
reading zip archive`` for a file cut short, ``'list' object has no attribute 'items'`` or
``KeyError: 'meta'`` deep in a loader for a file that holds something else.
"""
import os
import zipfile
from typing import Any, Dict, Iterable, Optional, Sequence

import torch

_ZIP_MAGIC = b'PK\x03\x04'  # torch.save's format since torch 1.6
_PICKLE_MAGIC = b'\x80'  # the legacy torch.save format starts with a pickle protocol opcode
_SAFETENSORS = '.safetensors'


class CheckpointFileError(ValueError):
    """A file given as a checkpoint is not one, or not the kind expected."""


def file_problem(path: str) -> Optional[str]:
    """What makes the file at ``path`` unreadable as a checkpoint, judged without unpickling it; None when it may be
    one."""
    if not os.path.isfile(path):
        return 'not found' if not os.path.exists(path) else 'not a file'
    size = os.path.getsize(path)
    if size == 0:
        return 'empty (0 bytes)'
    if path.lower().endswith(_SAFETENSORS):
        return None
    with open(path, 'rb') as file:
        head = file.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return (f'cut short ({size:,} bytes): a torch.save archive whose end is missing, as a write that did not '
                    'finish leaves it')
        return None
    if head.startswith(_PICKLE_MAGIC):
        return None
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return f'not a torch.save file (it starts with {head[:8]!r})'
    return f'a text file, not a torch.save file (it starts with {text[:40]!r})'


def check_checkpoint_file(path: str, expected: str) -> None:
    """Raise :class:`CheckpointFileError` (``FileNotFoundError`` if absent) when ``path`` cannot be ``expected``."""
    problem = file_problem(path)
    if problem == 'not found':
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if problem is not None:
        raise CheckpointFileError(f'{path} is {problem}; expected {expected}')


def load_checkpoint_file(path: str, expected: str, required_keys: Sequence[str] = ()) -> Dict[str, Any]:
    """The dict in ``path`` (``torch.load``, ``weights_only=True``, tensors memory-mapped), checked against
    ``expected``.

    Raises :class:`CheckpointFileError` naming the file, what it is and ``expected`` when it is not a
    torch.save file, is cut short, holds no dict or lacks one of ``required_keys``; torch's
    ``UnpicklingError`` (a file holding objects ``weights_only`` refuses) passes through.
    """
    check_checkpoint_file(path, expected)
    loaded = torch.load(path, map_location='cpu', weights_only=True, mmap=_is_zip(path))
    check_contents(loaded, path, expected, required_keys)
    return loaded


def check_contents(loaded: Any, path: str, expected: str, required_keys: Sequence[str] = ()) -> None:
    """Raise :class:`CheckpointFileError` unless ``loaded`` (the object in ``path``) is a dict with
    ``required_keys``."""
    if not isinstance(loaded, dict):
        raise CheckpointFileError(f'{path} holds a {type(loaded).__name__}, not a dict; expected {expected}')
    missing = [key for key in required_keys if key not in loaded]
    if missing:
        shown = ', '.join(repr(key) for key in list(loaded)[:8]) or 'none'
        raise CheckpointFileError(f'{path} holds a dict without {", ".join(map(repr, missing))} (its keys: {shown}); '
                                  f'expected {expected}')


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file (its zip directory, which a file cut short lacks, reads)."""
    return os.path.isfile(path) and _is_zip(path) and file_problem(path) is None


def latest_complete_checkpoint(pointer: str, candidates: Iterable[str]) -> Optional[str]:
    """The checkpoint the text file ``pointer`` names when it is complete, else the newest complete of
    ``candidates``."""
    if os.path.isfile(pointer):
        with open(pointer) as file:
            named = file.read().strip()
        if named and is_complete_checkpoint(named):
            return named
    return max((path for path in candidates if is_complete_checkpoint(path)), key=os.path.getmtime, default=None)


def _is_zip(path: str) -> bool:
    with open(path, 'rb') as file:
        return file.read(4) == _ZIP_MAGIC
