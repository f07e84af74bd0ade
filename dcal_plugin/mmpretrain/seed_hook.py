"""``EpochSeedHook``: reseed every epoch so that a resumed run repeats the uninterrupted one exactly."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

_EPOCH_STRIDE = 1_000_003


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Seed ``random``, NumPy and torch with ``runner.seed + epoch · 1000003`` before each training epoch.

    mmengine restores the run's seed on resume but not the random streams consumed by earlier
    epochs, so augmentation, drop-path and DCAL's PWCA partners would differ after a resume.
    Seeding each epoch from (seed, epoch) makes epoch e draw the same numbers whether or not
    the run was interrupted before it (exactly so with ``num_workers=0`` or non-persistent
    workers; mmengine seeds workers from the run's seed).
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        """Reseed the three generators for the coming epoch."""
        seed = (runner.seed + runner.epoch * _EPOCH_STRIDE) % 2 ** 32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
