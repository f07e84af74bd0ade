"""Which sklearn digit, split, label and camera each image gets; rendering and saving a plan."""
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .canvas import random_style, render_sample
from .digits import NUM_DIGIT_CLASSES, digit_bank
from .files import save_jpeg
from .options import FgvcOptions, RenderOptions, ReidOptions
from .records import SampleRecord

# Independent random streams derived from the user's seed.
PLAN_STREAM, RENDER_STREAM, CAMERA_STREAM, ID_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class PlannedImage:
    """One image to render: split, label (digit class or 0-based identity), sklearn index, camera, shot number."""

    split: str
    label: int
    source_index: int
    camera: Optional[int]
    shot: int  # running index of this image within its class (classification) or identity (re-ID)


def plan_fgvc(seed: int, options: FgvcOptions) -> List[PlannedImage]:
    """Per digit class: train then test images, drawn from disjoint pools of that class's sklearn samples."""
    rng = np.random.default_rng([seed, PLAN_STREAM])
    labels = digit_bank().labels
    plan = []
    for digit in range(NUM_DIGIT_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        train_pool, test_pool = _split_pool(members, options.train_per_class, options.test_per_class)
        plan += _class_images('train', digit, train_pool, options.train_per_class, shot0=0)
        plan += _class_images('test', digit, test_pool, options.test_per_class, shot0=options.train_per_class)
    return plan


def plan_reid(seed: int, options: ReidOptions, val_per_train_id: int = 0) -> List[PlannedImage]:
    """Train ids (train, then val shots) and test ids (1 query, then gallery from other cameras); ids 0-based."""
    rng = np.random.default_rng([seed, PLAN_STREAM])
    num_ids = options.num_train_ids + options.num_test_ids
    if num_ids > len(digit_bank().labels):
        raise ValueError(f'num_train_ids + num_test_ids must be <= {len(digit_bank().labels)}, got {num_ids}')
    sources = rng.permutation(len(digit_bank().labels))[:num_ids]
    cameras = np.arange(options.num_cameras)
    plan = []
    for pid, source in enumerate(sources[:options.num_train_ids]):
        shots = _spread(rng, cameras, options.images_per_train_id + val_per_train_id)
        splits = ['train'] * options.images_per_train_id + ['val'] * val_per_train_id
        plan += [PlannedImage(s, pid, int(source), int(c), k) for k, (s, c) in enumerate(zip(splits, shots))]
    for pid, source in enumerate(sources[options.num_train_ids:]):
        query_camera = int(rng.integers(options.num_cameras))
        shots = _spread(rng, cameras[cameras != query_camera], options.gallery_per_test_id)
        plan.append(PlannedImage('query', pid, int(source), query_camera, 0))
        plan += [PlannedImage('gallery', pid, int(source), int(c), k) for k, c in enumerate(shots, start=1)]
    return plan


def plan_reid_with_disjoint_ids(seed: int, options: ReidOptions) -> List[PlannedImage]:
    """:func:`plan_reid` with identities numbered 1..N across train and test (ascending in each, interleaved at
    random)."""
    shuffled = np.random.default_rng([seed, ID_STREAM]).permutation(options.num_train_ids + options.num_test_ids) + 1
    train_ids = sorted(shuffled[:options.num_train_ids].tolist())
    test_ids = sorted(shuffled[options.num_train_ids:].tolist())
    return [dataclasses.replace(p, label=(train_ids if p.split == 'train' else test_ids)[p.label])
            for p in plan_reid(seed, options)]


def write_plan(
    plan: Sequence[PlannedImage],
    seed: int,
    options: RenderOptions,
    path_for: Callable[[int, PlannedImage], Path],
) -> List[SampleRecord]:
    """Render plan[i] with its own random stream, save it as JPEG at path_for(i, plan[i]), return the records."""
    bank = digit_bank()
    cameras = {planned.camera for planned in plan if planned.camera is not None}
    camera_styles = {c: random_style(np.random.default_rng([seed, CAMERA_STREAM, c])) for c in cameras}
    records = []
    for index, planned in enumerate(plan):
        rng = np.random.default_rng([seed, RENDER_STREAM, index])
        style = random_style(rng) if planned.camera is None else camera_styles[planned.camera]
        rendered = render_sample(bank.ink[planned.source_index], rng, style, options, bank.ink)
        path = path_for(index, planned)
        save_jpeg(path, rendered.image, options.jpeg_quality)
        records.append(SampleRecord(
            path=path, split=planned.split, label=planned.label, camera=planned.camera,
            source_index=planned.source_index, box=rendered.box, square=rendered.square))
    return records


def _split_pool(members: np.ndarray, num_train: int, num_test: int) -> Tuple[np.ndarray, np.ndarray]:
    """Disjoint train/test pools from members; when too few, shared in proportion to the requested counts."""
    if num_train + num_test <= len(members):
        return members[:num_train], members[num_train:num_train + num_test]
    cut = min(max(1, round(len(members) * num_train / (num_train + num_test))), len(members) - 1)
    return members[:cut], members[cut:]


def _class_images(split: str, digit: int, pool: np.ndarray, count: int, shot0: int) -> List[PlannedImage]:
    """count images of one class and split, cycling through the pool's samples."""
    return [PlannedImage(split, digit, int(pool[k % len(pool)]), None, shot0 + k) for k in range(count)]


def _spread(rng: np.random.Generator, cameras: np.ndarray, count: int) -> np.ndarray:
    """count cameras: a random order of cameras, repeated as needed, so views are as varied as possible."""
    return np.resize(rng.permutation(cameras), count)
