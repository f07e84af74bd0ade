"""``EpochSeedHook``: reseed every epoch so that a resumed run repeats the uninterrupted one exactly."""
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ..seeding import seed_epoch


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Seed ``random``, NumPy and torch from ``(runner.seed, epoch)`` before each training epoch (:func:`seed_epoch`).

    mmengine restores the run's seed on resume but not the random streams consumed by earlier
    epochs, so augmentation, drop-path and DCAL's PWCA partners would differ after a resume.
    Seeding each epoch from (seed, epoch) makes epoch e draw the same numbers whether or not
    the run was interrupted before it (exactly so with ``num_workers=0`` or non-persistent
    workers; mmengine seeds workers from the run's seed).
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        """Reseed the three generators for the coming epoch."""
        seed_epoch(runner.seed, runner.epoch)
