"""Source images: scikit-learn's bundled 8x8 handwritten digits (real scans, no download)."""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits

NUM_DIGIT_CLASSES = 10


@dataclass(frozen=True)
class DigitBank:
    """The 1797 sklearn digits: ink (N, 8, 8) float32 in [0, 1] and labels (N,) int64 in 0..9."""

    ink: np.ndarray
    labels: np.ndarray


@lru_cache(maxsize=1)
def digit_bank() -> DigitBank:
    """Load the sklearn digits once, as read-only arrays with ink scaled from 0..16 to 0..1."""
    data = load_digits()
    ink = (data.images / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    ink.setflags(write=False)
    labels.setflags(write=False)
    return DigitBank(ink=ink, labels=labels)
