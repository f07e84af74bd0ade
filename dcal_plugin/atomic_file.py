"""Files written whole or not at all: a crash (kill -9, power loss, a full disk) never leaves a partial file in place.

Every checkpoint this project's runs write, in both toolboxes, and the files that name the
latest one go through :func:`write_atomically`: the bytes go to a temporary name in the same
folder, are flushed and fsynced, and only then renamed over the target (a rename within one file
system is atomic on POSIX); the folder is fsynced so that the rename itself survives a power loss.
"""
import contextlib
import errno
import io
import os
import shutil
import tempfile
from typing import Any, Union

import torch

TEMPORARY_PREFIX = '.partial-'  # a file left by a crash mid-write starts with it; nothing reads or names it


class DiskFullError(OSError):
    """A write found no space left on the device; the file it would have replaced is unchanged."""


def write_atomically(path: Union[str, os.PathLike], data: Union[bytes, str]) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` so that ``path`` holds either its old content or all of
    ``data``.

    Raises :class:`DiskFullError` naming the file, its size and the free space when the device is
    full; the temporary file is removed on any error.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = data.encode('utf-8') if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX + os.path.basename(path) + '.', dir=folder)
    try:
        with os.fdopen(descriptor, 'wb') as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            free = shutil.disk_usage(folder).free
            raise DiskFullError(errno.ENOSPC, f'no space left on the device to write {path} ({len(payload):,} bytes, '
                                f'{free:,} bytes free); the file was not changed, so the last complete '
                                'checkpoint stays the latest. Free space (or point the work dir elsewhere) and '
                                'resume') from error
        raise
    _fsync_folder(folder)


def save_atomically(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``torch.save(obj, path)``, written whole or not at all (:func:`write_atomically`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getvalue())


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the platform lets a folder be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

