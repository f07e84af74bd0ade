"""The source task of the built-in pretrained ViT: which two digits a canvas shows (45 unordered pairs).

It stands in for ImageNet: other classes than the targets' (a pair of different digits, never a
single digit class or a handwriting identity), real handwritten digits, and none of the sklearn
samples that the built-in data sets (``DEMO_FGVC_OPTIONS``, ``DEMO_REID_OPTIONS``, seed 0) put in
their test splits: :func:`held_out_samples` names those, and the pairs are drawn from the rest.
"""
import itertools
from typing import Iterable, Tuple

import numpy as np

from .canvas import random_style, render_pair
from .digits import NUM_DIGIT_CLASSES, digit_bank
from .options import DEMO_FGVC_OPTIONS, DEMO_REID_OPTIONS, FgvcOptions, RenderOptions, ReidOptions
from .plans import plan_fgvc, plan_reid

PAIRS = tuple(itertools.combinations(range(NUM_DIGIT_CLASSES), 2))  # class k: the digits PAIRS[k], in either order
PAIR_STREAM = 4  # random stream of the pair images, beside plans.PLAN_STREAM ... ID_STREAM


def held_out_samples(seed: int = 0, fgvc_options: dict = DEMO_FGVC_OPTIONS,
                     reid_options: dict = DEMO_REID_OPTIONS) -> np.ndarray:
    """Sorted sklearn indices in the test splits of the built-in FGVC and Re-ID data sets (every layout of each)."""
    fgvc = {planned.source_index for planned in plan_fgvc(seed, FgvcOptions(**fgvc_options)) if planned.split == 'test'}
    reid = {planned.source_index for planned in plan_reid(seed, ReidOptions(**reid_options))
            if planned.split in ('query', 'gallery')}
    return np.array(sorted(fgvc | reid), dtype=np.int64)


def split_pair_sources(held_out: Iterable[int], test_share: float = 0.15,
                       seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The sklearn indices not ``held_out``, split per digit into the pair task's train and test pools."""
    rng = np.random.default_rng([seed, PAIR_STREAM])
    labels, excluded = digit_bank().labels, set(int(index) for index in held_out)
    train, test = [], []
    for digit in range(NUM_DIGIT_CLASSES):
        members = rng.permutation([index for index in np.flatnonzero(labels == digit) if index not in excluded])
        cut = max(1, round(len(members) * test_share))
        test += members[:cut].tolist()
        train += members[cut:].tolist()
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


def render_digit_pairs(num_images: int, pool: np.ndarray, options: RenderOptions,
                       seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``num_images`` canvases ``[N, S, S, 3]`` uint8 of two digits from ``pool`` (sklearn indices), and their pair
    class ``[N]``.

    Each image: a pair class uniformly, one sample of each of its digits from ``pool``, a random
    order (left, right) and rendering style.
    """
    bank = digit_bank()
    by_digit = [pool[bank.labels[pool] == digit] for digit in range(NUM_DIGIT_CLASSES)]
    if any(len(members) == 0 for members in by_digit):
        raise ValueError('the pool must hold at least one sample of every digit')
    rng = np.random.default_rng([seed, PAIR_STREAM, num_images])
    images = np.empty((num_images, options.image_size, options.image_size, 3), np.uint8)
    classes = rng.integers(len(PAIRS), size=num_images)
    for index, pair_class in enumerate(classes):
        digits = list(PAIRS[pair_class])
        rng.shuffle(digits)
        inks = tuple(bank.ink[rng.choice(by_digit[digit])] for digit in digits)
        images[index] = render_pair(inks, rng, random_style(rng), options, bank.ink)
    return images, classes.astype(np.int64)
