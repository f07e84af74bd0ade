"""One run per work dir: an exclusive lock that the operating system releases when its process ends, however it ends."""
import fcntl
import os
from typing import Dict, Optional

LOCK_NAME = '.dcal-run.lock'
_HELD: Dict[str, int] = {}  # lock path -> descriptor, for the locks this process holds


class WorkDirBusyError(RuntimeError):
    """Another process is training into the same work dir."""


class WorkDirLock:
    """An exclusive ``flock`` on ``work_dir/.dcal-run.lock``, which holds the owner's process id for messages.

    :meth:`acquire` raises :class:`WorkDirBusyError` naming the folder and the process that holds it;
    the lock is released by :meth:`release` or when the process exits (also on kill -9), so a
    crashed run never leaves a stale lock. A lock this process already holds (a run in the same
    process that stopped with an error, before it could release it) is taken over.
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.path = os.path.join(self.work_dir, LOCK_NAME)
        self.descriptor: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock (no-op if this object holds it), or raise :class:`WorkDirBusyError`."""
        if self.descriptor is not None:
            return
        if self.path in _HELD:
            self.descriptor = _HELD[self.path]
            return
        os.makedirs(self.work_dir, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(descriptor, 64, 0).decode(errors='replace').strip() or 'unknown'
            os.close(descriptor)
            raise WorkDirBusyError(
                f'another run (process {owner}) is writing into {self.work_dir}: two runs in one work dir would '
                'interleave their logs and delete each other\'s checkpoints. Wait for it to end, stop it, or give '
                'this run another work dir (--work-dir / data.save_dir)') from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        self.descriptor = _HELD[self.path] = descriptor

    def release(self) -> None:
        """Give the lock up (no-op if not held)."""
        if self.descriptor is not None and _HELD.get(self.path) == self.descriptor:
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            del _HELD[self.path]
        self.descriptor = None

    def __enter__(self) -> 'WorkDirLock':
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
