"""Per-epoch seeds: epoch e of a run draws the same random numbers whether or not the run was interrupted before it."""
import random

import numpy as np
import torch

_EPOCH_STRIDE = 1_000_003


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed ``random``, NumPy and torch with ``seed + epoch · 1000003`` (mod 2^32) before epoch ``epoch`` (0-based)."""
    value = (seed + epoch * _EPOCH_STRIDE) % 2 ** 32
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
