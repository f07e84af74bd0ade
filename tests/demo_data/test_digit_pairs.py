"""The source task of the built-in pretrained ViT: held-out samples, disjoint pools, two-digit canvases."""
import numpy as np
import pytest

from dcal_plugin.demo_data import build_demo_data
from dcal_plugin.demo_data.canvas import random_style, render_pair
from dcal_plugin.demo_data.digit_pairs import PAIRS, held_out_samples, render_digit_pairs, split_pair_sources
from dcal_plugin.demo_data.digits import digit_bank
from dcal_plugin.demo_data.options import DEMO_FGVC_OPTIONS, DEMO_REID_OPTIONS, RenderOptions

PAIR_IMAGES = RenderOptions(image_size=32, digit_scale=(0.35, 0.5), clutter=0.0, digit_colour='white')


@pytest.mark.slow
def test_held_out_samples_are_the_test_samples_the_built_in_data_sets_write(tmp_path):
    """Every layout writer's query/gallery/test records, read back from written data sets of the demos' options."""
    written = set()
    for layout, options in (('cub', DEMO_FGVC_OPTIONS), ('fgvc_aircraft', DEMO_FGVC_OPTIONS),
                            ('veri776', DEMO_REID_OPTIONS), ('msmt17', DEMO_REID_OPTIONS)):
        data = build_demo_data(tmp_path / layout, layout, seed=0, **options)
        written |= {record.source_index for record in data.records if record.split in ('test', 'query', 'gallery')}
    assert set(held_out_samples().tolist()) == written
    assert 300 < len(written) < 400  # 10 x 30 FGVC test samples and 50 Re-ID test identities (some shared)


def test_pair_pools_avoid_the_held_out_samples_and_each_other():
    held_out = held_out_samples()
    train, test = split_pair_sources(held_out)
    assert not set(train) & set(test) and not (set(train) | set(test)) & set(held_out.tolist())
    assert len(train) + len(test) + len(held_out) == len(digit_bank().labels)
    for pool in (train, test):
        assert set(digit_bank().labels[pool]) == set(range(10))


def test_a_pair_canvas_shows_its_first_digit_left_and_its_second_right():
    bank = digit_bank()
    one, zero = bank.ink[np.flatnonzero(bank.labels == 1)[0]], bank.ink[np.flatnonzero(bank.labels == 0)[0]]
    rng = np.random.default_rng(0)
    image = render_pair((one, np.zeros_like(zero)), rng, random_style(rng), PAIR_IMAGES, bank.ink)
    bright = image.max(axis=-1) > 200  # white ink on a dark, clutter-free canvas
    assert bright[:, :16].sum() > 10 and bright[:, 16:].sum() == 0
    image = render_pair((np.zeros_like(one), zero), rng, random_style(rng), PAIR_IMAGES, bank.ink)
    bright = image.max(axis=-1) > 200
    assert bright[:, :16].sum() == 0 and bright[:, 16:].sum() > 10


def test_pair_images_are_seeded_and_labelled_by_pair():
    _, test = split_pair_sources(held_out_samples())
    images, classes = render_digit_pairs(90, test, PAIR_IMAGES, seed=5)
    again, same = render_digit_pairs(90, test, PAIR_IMAGES, seed=5)
    other, _ = render_digit_pairs(90, test, PAIR_IMAGES, seed=6)
    assert images.shape == (90, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(classes, same) and not np.array_equal(images, other)
    assert classes.min() >= 0 and classes.max() < len(PAIRS) == 45 and len(set(classes.tolist())) > 30


def test_a_pool_missing_a_digit_is_refused():
    bank = digit_bank()
    with pytest.raises(ValueError, match='every digit'):
        render_digit_pairs(4, np.flatnonzero(bank.labels < 9), PAIR_IMAGES)
