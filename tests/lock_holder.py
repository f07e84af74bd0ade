"""A work dir held by another process, as a second training run meets it (the lock tests of both toolboxes)."""
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
_HOLD = ('import sys, time; from dcal_plugin.work_dir_lock import WorkDirLock; WorkDirLock(sys.argv[1]).acquire(); '
         'print("held", flush=True); time.sleep(120)')


@contextlib.contextmanager
def held_by_another_process(work_dir: Path) -> Iterator[int]:
    """Within the context ``work_dir`` is locked by a child process, whose pid it yields; killed (kill -9) on exit."""
    holder = subprocess.Popen([sys.executable, '-c', _HOLD, str(work_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
