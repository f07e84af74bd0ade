"""One run per work dir: a second process is refused, naming the holder; a killed holder frees the folder."""
import time

import pytest

from dcal_plugin.work_dir_lock import WorkDirBusyError, WorkDirLock
from tests.lock_holder import held_by_another_process


def test_a_second_process_is_refused_until_the_holder_is_killed(tmp_path):
    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(WorkDirBusyError, match=rf'another run \(process {pid}\) is writing into {tmp_path}'):
            WorkDirLock(str(tmp_path)).acquire()
    time.sleep(0.1)
    with WorkDirLock(str(tmp_path)):  # no stale lock after kill -9
        pass


def test_this_process_takes_over_a_lock_it_never_released(tmp_path):
    first = WorkDirLock(str(tmp_path))
    first.acquire()  # a run that stopped with an error before releasing it
    second = WorkDirLock(str(tmp_path))
    second.acquire()
    second.release()
    with WorkDirLock(str(tmp_path)):
        pass
