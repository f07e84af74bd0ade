"""``DCALCheckpointHook``: mmengine's ``CheckpointHook`` whose checkpoints a crash at any moment can neither corrupt nor
lose.

mmengine writes a checkpoint file in place, then ``last_checkpoint`` in place; after a new best
it removes the old best, writes the new one and re-writes ``epoch_N.pth``. A kill during any of
these writes left a truncated file that ``last_checkpoint`` named (resume fails), or a truncated
best; a kill during validation or before ``epoch_N.pth`` was re-written left a run whose resume
never validates epoch N again, so a worse epoch could become the best.
"""
import glob
import os
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from ..atomic_file import TEMPORARY_PREFIX, write_atomically
from ..core.checkpoint_file import latest_complete_checkpoint, load_checkpoint_file
from .runner import old_checkpoint_help

ATOMIC_BACKEND = 'dcal_atomic_local'
VALIDATED_EPOCH = 'dcal_validated_epoch'  # message hub key: the last epoch whose validation finished
LAST_CHECKPOINT = 'last_checkpoint'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (:func:`~dcal_plugin.atomic_file.write_atomically`)."""

    def put(self, obj: bytes, filepath) -> None:
        """Write ``obj`` to ``filepath`` whole or not at all."""
        write_atomically(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        """Write the text ``obj`` to ``filepath`` whole or not at all."""
        write_atomically(filepath, obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


@HOOKS.register_module()
class DCALCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) with atomic writes, a resume that finds the latest complete checkpoint, and
    the true best.

    - Every checkpoint, best ones included, is written whole or not at all (``backend_args``
      defaults to :class:`AtomicLocalBackend`), and so is ``last_checkpoint``, after it.
    - ``resume=True`` without a file (``--resume``): the checkpoint ``last_checkpoint`` names if it
      is complete, else the newest complete one in the work dir (files a crash left half-written by
      an older version, or the temporary files of a write, are never resumed from). The file to
      resume from or load (``load_from``) is checked first: an error says what a file that is no
      such checkpoint is (empty, cut short, text, a list, a dict without ``meta``).
    - After a resume, the resumed epoch is validated again if its validation had not finished
      (a crash during validation or during the best's save): so a resumed run keeps the true best.
    """

    def __init__(self, *args, backend_args: Optional[Dict] = None, **kwargs) -> None:
        local = '://' not in str(kwargs.get('out_dir') or '')
        if backend_args is None and kwargs.get('file_client_args') is None and local:
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, backend_args=backend_args, **kwargs)

    def before_run(self, runner) -> None:
        """Point an automatic resume at the latest complete checkpoint of the work dir; check the file to be read."""
        resume = getattr(runner, '_resume', False)
        if resume and getattr(runner, '_load_from', None) is None:
            latest = latest_checkpoint(runner.work_dir)
            if latest is not None:
                runner._load_from = latest
                runner.logger.info(f'Resuming from the latest complete checkpoint: {latest}')
        path = getattr(runner, '_load_from', None)
        if path and '://' not in str(path):
            expected = ('a checkpoint of an mmengine run to resume (a dict with "state_dict" and "meta")' if resume
                        else 'a checkpoint or state_dict to load (load_from)')
            with old_checkpoint_help(str(path)):
                load_checkpoint_file(str(path), expected, ('state_dict', 'meta') if resume else ())

    def before_train(self, runner) -> None:
        """mmengine's set-up, a crash's temporary files removed; then the resumed epoch validated if it had not been."""
        super().before_train(runner)
        if is_main_process():
            remove_partial_files(self.out_dir)
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop) or runner.val_loop is None or loop.epoch == 0:
            return
        validation_due = loop.epoch >= loop.val_begin and (
            loop.epoch % loop.val_interval == 0 or loop.epoch == loop.max_epochs)
        if validation_due and runner.message_hub.get_info(VALIDATED_EPOCH) != loop.epoch:
            runner.logger.info(f'Validating epoch {loop.epoch} again: its validation had not finished before the '
                               'run stopped')
            runner.val_loop.run()

    def after_val_epoch(self, runner, metrics: Dict[str, float]) -> None:
        """Record that this epoch's validation finished (saved with the re-written checkpoint), then mmengine's best."""
        runner.message_hub.update_info(VALIDATED_EPOCH, runner.epoch)
        super().after_val_epoch(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """mmengine's save, then ``last_checkpoint`` written again, atomically and durably."""
        super()._save_checkpoint_with_step(runner, step, meta)
        if is_main_process():
            write_atomically(osp.join(runner.work_dir, LAST_CHECKPOINT), self.last_ckpt)


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The complete checkpoint ``work_dir/last_checkpoint`` names, else the newest complete ``*.pth`` there (no
    best)."""
    candidates = [path for path in glob.glob(osp.join(work_dir, '*.pth'))
                  if not osp.basename(path).startswith((TEMPORARY_PREFIX, 'best_'))]
    return latest_complete_checkpoint(osp.join(work_dir, LAST_CHECKPOINT), candidates)


def remove_partial_files(folder: str) -> None:
    """Delete the temporary files a crash left mid-write in ``folder``."""
    for path in glob.glob(osp.join(folder, TEMPORARY_PREFIX + '*')):
        os.remove(path)
