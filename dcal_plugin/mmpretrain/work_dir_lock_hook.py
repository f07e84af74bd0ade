"""``WorkDirLockHook``: one training run per work dir."""
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ..work_dir_lock import WorkDirLock


@HOOKS.register_module()
class WorkDirLockHook(Hook):
    """Lock the work dir from the start of training to its end (:class:`~dcal_plugin.work_dir_lock.WorkDirLock`).

    A second training run started into the same work dir stops before its first iteration,
    having written nothing but mmengine's config dump and its own timestamped log folder, with a ``WorkDirBusyError``
    naming the folder and the process that holds it. The main process holds the lock; the operating system
    releases it when that process ends, however it ends. Testing (``runner.test()``) takes no lock.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self.lock = None

    def before_train(self, runner) -> None:
        """Take the lock of ``runner.work_dir``."""
        if is_main_process():
            self.lock = WorkDirLock(runner.work_dir)
            self.lock.acquire()

    def after_train(self, runner) -> None:
        """Give it up."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
