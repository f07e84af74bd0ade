"""Tests for dcal_plugin.demo_data: official layouts read by the real reader classes, determinism, boxes, CLI."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcal_plugin.demo_data import LAYOUTS, DemoData, build_demo_data, make_demo_data
from dcal_plugin.demo_data.canvas import INK_THRESHOLD, random_style, render_sample
from dcal_plugin.demo_data.digits import digit_bank
from dcal_plugin.demo_data.options import FgvcOptions, RenderOptions
from dcal_plugin.demo_data.plans import plan_fgvc
from dcal_plugin.layouts import (AIRCRAFT_DATA_DIR, AIRCRAFT_VARIANTS, CARS_ANNOTATIONS, CUB_BOXES, CUB_CLASSES,
                                 CUB_FOLDER, CUB_IMAGE_DIR, CUB_IMAGES, VERI_FILE_NAME, VERI_FILE_REGEX, VERI_FOLDER,
                                 VERI_IMAGE_DIRS, VERI_NAME_LISTS)

REPO = Path(__file__).resolve().parents[2]
SMALL_FGVC = dict(train_per_class=4, test_per_class=2)
SMALL_REID = dict(num_train_ids=5, images_per_train_id=3, num_test_ids=4, gallery_per_test_id=3, num_cameras=4)


def _pairs(records, with_camera: bool = False) -> list[tuple]:
    """Sorted (path, label[, camera]) tuples of generator records."""
    return sorted((str(r.path), r.label, r.camera) if with_camera else (str(r.path), r.label) for r in records)


def _file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _max_channel(path: Path) -> np.ndarray:
    """Saved image as (H, W) float32: per-pixel max over RGB (the bright digit stands out in every hue)."""
    return np.asarray(Image.open(path).convert('RGB'), np.float32).max(axis=-1)


@pytest.fixture(scope='module')
def fgvc_data(tmp_path_factory) -> dict[str, DemoData]:
    """The three classification layouts, small, with a non-default image size."""
    root = tmp_path_factory.mktemp('fgvc')
    return {layout: build_demo_data(root, layout, seed=3, image_size=48, **SMALL_FGVC)
            for layout in ('cub', 'stanford_cars', 'fgvc_aircraft')}


@pytest.mark.parametrize('layout, reader, splits', [
    ('cub', 'CUB', {'train': ('train',), 'test': ('test',)}),
    ('stanford_cars', 'StanfordCars', {'train': ('train',), 'test': ('test',)}),
    ('fgvc_aircraft', 'FGVCAircraft',
     {'train': ('train',), 'val': ('val',), 'trainval': ('train', 'val'), 'test': ('test',)}),
])
def test_mmpretrain_reads_fgvc_layouts(fgvc_data, layout, reader, splits):
    """mmpretrain's own dataset class reads every split with the paths and 0-based labels that were written."""
    datasets = pytest.importorskip('mmpretrain.datasets')
    data = fgvc_data[layout]
    for split, record_splits in splits.items():
        dataset = getattr(datasets, reader)(data_root=str(data.root), split=split,
                                            pipeline=[dict(type='LoadImageFromFile')])
        expected = _pairs(r for name in record_splits for r in data.split(name))
        read = sorted((info['img_path'], info['gt_label']) for info in dataset.load_data_list())
        assert read == expected
        assert dataset[0]['img'].shape == (48, 48, 3)
    assert len(data.split('test')) == 10 * SMALL_FGVC['test_per_class']
    assert {r.label for r in data.records} == set(range(10))


def test_fgvc_class_names_match_reader_metainfo(fgvc_data):
    """The class names written (classes.txt, class_names in the .mat, variants.txt) are the readers' first ten."""
    datasets = pytest.importorskip('mmpretrain.datasets')
    mat4py = pytest.importorskip('mat4py')
    cub_root, cars_root, aircraft_root = (fgvc_data[k].root for k in ('cub', 'stanford_cars', 'fgvc_aircraft'))
    cub_names = [line.split()[1].split('.', 1)[1] for line in (cub_root / CUB_CLASSES).read_text().splitlines()]
    assert cub_names == list(datasets.CUB.METAINFO['classes'][:10])
    cars_names = mat4py.loadmat(str(cars_root / CARS_ANNOTATIONS))['class_names']
    assert cars_names == list(datasets.StanfordCars.METAINFO['classes'][:10])
    variants = (aircraft_root / AIRCRAFT_DATA_DIR / AIRCRAFT_VARIANTS).read_text().splitlines()
    assert variants == list(datasets.FGVCAircraft.METAINFO['classes'][:10])


def test_stanford_cars_mat_boxes_are_one_based_inclusive(fgvc_data):
    """cars_annos.mat holds each image's digit box as 1-based inclusive (x1, y1, x2, y2), in image order."""
    mat4py = pytest.importorskip('mat4py')
    data = fgvc_data['stanford_cars']
    annotations = mat4py.loadmat(str(data.root / CARS_ANNOTATIONS))['annotations']
    assert annotations['relative_im_path'] == [str(r.path.relative_to(data.root)) for r in data.records]
    boxes = zip(annotations['bbox_x1'], annotations['bbox_y1'], annotations['bbox_x2'], annotations['bbox_y2'])
    assert [tuple(b) for b in boxes] == [(x + 1, y + 1, x + w, y + h) for x, y, w, h in (r.box for r in data.records)]


def test_torchreid_reads_msmt17(tmp_path):
    """torchreid's MSMT17 reads train/query/gallery (and list_val) with the pids and 0-based camids written."""
    pytest.importorskip('torchreid')
    # attribute paths: the official torchreid 1.4.0 and PyPI's repackaging (torchreid.reid) both have them
    import torchreid

    MSMT17 = torchreid.data.datasets.image.MSMT17

    data = build_demo_data(tmp_path, 'msmt17', seed=1, val_per_train_id=1, **SMALL_REID)
    assert data.root == tmp_path.resolve()
    dataset = MSMT17(root=str(data.root), verbose=False)
    for split, read in (('train', dataset.train), ('query', dataset.query), ('gallery', dataset.gallery)):
        assert sorted(item[:3] for item in read) == _pairs(data.split(split), with_camera=True)
    assert sorted(dataset.process_dir(dataset.train_dir, dataset.list_val_path)) == _pairs(
        data.split('val'), with_camera=True)
    assert dataset.num_train_pids == SMALL_REID['num_train_ids']
    assert sorted({item[1] for item in dataset.query}) == list(range(SMALL_REID['num_test_ids']))
    _assert_reid_identities(data)


def test_veri776_layout(tmp_path):
    """VeRi name lists list existing files with VeRi names; queries are in image_test and seen by other cameras."""
    data = build_demo_data(tmp_path, 'veri776', seed=2, **SMALL_REID)
    assert data.root == tmp_path.resolve()
    veri = data.root / VERI_FOLDER
    lists = {}
    for split in ('train', 'query', 'gallery'):
        names = (veri / VERI_NAME_LISTS[split]).read_text().splitlines()
        assert all((veri / VERI_IMAGE_DIRS[split] / name).is_file() for name in names)
        parsed = [VERI_FILE_REGEX.match(name) for name in names]
        assert all(parsed), names
        assert all(VERI_FILE_NAME.format(**{k: int(v) for k, v in m.groupdict().items()}) == m[0] for m in parsed)
        lists[split] = {(int(m['vehicle']), int(m['camera'])) for m in parsed}
        expected = {(r.label, r.camera + 1) for r in data.split(split)}
        assert lists[split] == expected
        assert len(names) == len(set(names)) == len(data.split(split))
    query_names = set((veri / VERI_NAME_LISTS['query']).read_text().splitlines())
    assert query_names <= set((veri / VERI_NAME_LISTS['gallery']).read_text().splitlines())
    train_ids = {vid for vid, _ in lists['train']}
    test_ids = {vid for vid, _ in lists['gallery']}
    assert not train_ids & test_ids
    for vid, camera in lists['query']:
        assert any(g_vid == vid and g_cam != camera for g_vid, g_cam in lists['gallery'])
    assert len(train_ids) == SMALL_REID['num_train_ids'] and len(test_ids) == SMALL_REID['num_test_ids']
    _assert_reid_identities(data)


def _assert_reid_identities(data: DemoData) -> None:
    """Each identity is one sklearn sample, train and test samples are disjoint, gallery views use other cameras."""
    train = {(r.label, r.source_index) for r in data.records if r.split in ('train', 'val')}
    test = {(r.label, r.source_index) for r in data.records if r.split in ('query', 'gallery')}
    for identities in (train, test):
        assert len({label for label, _ in identities}) == len(identities)
    assert not {s for _, s in train} & {s for _, s in test}
    gallery = data.split('gallery')
    for query in data.split('query'):
        same_view = [g for g in gallery if g.label == query.label and g.camera == query.camera]
        assert all(g.path.name == query.path.name for g in same_view)  # only VeRi's copy of the query itself
        assert any(g.label == query.label and g.camera != query.camera for g in gallery)


@pytest.mark.parametrize('layout, options', [('stanford_cars', dict(train_per_class=2, test_per_class=1)),
                                             ('msmt17', SMALL_REID)])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, layout, options):
    """Re-running with the same seed reproduces every file byte for byte; another seed changes the images."""
    runs = {name: make_demo_data(tmp_path / name, layout, seed=seed, **options)
            for name, seed in (('a', 7), ('b', 7), ('c', 8))}
    hashes = {name: _file_hashes(root) for name, root in runs.items()}
    for mat_file in runs['a'].rglob('*.mat'):
        assert b'Created on' not in mat_file.read_bytes()[:116]  # scipy's timestamp would break re-runs
    assert hashes['a'] == hashes['b']
    image_bytes = {name: {h for key, h in run.items() if key.endswith('.jpg')} for name, run in hashes.items()}
    assert len(image_bytes['a']) == len(image_bytes['c']) > 0
    assert not image_bytes['a'] & image_bytes['c']
    annotations = {name: {k: h for k, h in run.items() if not k.endswith('.jpg')} for name, run in hashes.items()}
    assert annotations['a'].keys() == annotations['c'].keys()
    assert annotations['a'] != annotations['c']


def test_cub_bounding_boxes_locate_the_digit(tmp_path):
    """bounding_boxes.txt (1-based ids of images.txt) holds each digit's box; the saved image is brightest there."""
    data = build_demo_data(tmp_path, 'cub', seed=4, **SMALL_FGVC)
    paths = dict(line.split() for line in (data.root / CUB_IMAGES).read_text().splitlines())
    boxes = {}
    for line in (data.root / CUB_BOXES).read_text().splitlines():
        image_id, *values = line.split()
        boxes[data.root / CUB_IMAGE_DIR / paths[image_id]] = tuple(float(v) for v in values)
    assert boxes == {r.path: tuple(float(v) for v in r.box) for r in data.records}
    for record in data.records:
        x, y, w, h = record.box
        sx, sy, side = record.square
        assert sx <= x and sy <= y and x + w <= sx + side and y + h <= sy + side
        image = _max_channel(record.path)
        inside = np.zeros(image.shape, bool)
        inside[y:y + h, x:x + w] = True
        assert np.percentile(image[inside], 90) - np.percentile(image[~inside], 90) > 25


@pytest.mark.parametrize('seed', range(5))
def test_render_box_and_alpha_match_the_pasted_digit(seed):
    """The renderer's box is tight around alpha > INK_THRESHOLD, and alpha is exactly where image != background."""
    rng = np.random.default_rng(seed)
    bank = digit_bank()
    rendered = render_sample(bank.ink[seed], rng, random_style(rng), RenderOptions(image_size=64), bank.ink)
    diff = np.abs(rendered.image.astype(np.int16) - rendered.background.astype(np.int16)).max(axis=-1)
    assert np.all(diff[rendered.alpha == 0] == 0)
    assert diff[rendered.alpha > 0.5].mean() > 60
    x, y, w, h = rendered.box
    ink = rendered.alpha > INK_THRESHOLD
    assert ink[y:y + h, x:x + w].sum() == ink.sum()
    assert ink[y, x:x + w].any() and ink[y + h - 1, x:x + w].any()
    assert ink[y:y + h, x].any() and ink[y:y + h, x + w - 1].any()
    assert 0.45 * 64 - 1 <= rendered.square[2] <= 0.7 * 64 + 1


def test_white_digits_change_only_the_digit_colour():
    """digit_colour='white' paints the same digit at the same place and scale, in white, over the same clutter."""
    bank = digit_bank()
    rendered = {colour: render_sample(bank.ink[3], np.random.default_rng(7), random_style(np.random.default_rng(1)),
                                      RenderOptions(image_size=64, digit_colour=colour), bank.ink)
                for colour in ('random', 'white')}
    assert rendered['white'].box == rendered['random'].box and rendered['white'].square == rendered['random'].square
    np.testing.assert_array_equal(rendered['white'].background, rendered['random'].background)
    solid = rendered['white'].alpha > 0.99
    assert solid.any() and rendered['white'].image[solid].min() >= 250
    assert not (rendered['random'].image[solid].min(axis=-1) >= 250).all()
    with pytest.raises(ValueError, match='digit_colour'):
        RenderOptions(digit_colour='blue')


def test_deciding_digit_is_the_real_sklearn_sample(fgvc_data):
    """The pasted square on disk, downsampled to 8x8, correlates with its sklearn source, not with other classes."""
    bank = digit_bank()
    data = fgvc_data['cub']
    own, other = [], []
    for record in data.records:
        x, y, side = record.square
        crop = Image.fromarray(_max_channel(record.path)[y:y + side, x:x + side])
        small = np.asarray(crop.resize((8, 8), Image.Resampling.BOX)).ravel()
        assert bank.labels[record.source_index] == record.label
        own.append(np.corrcoef(small, bank.ink[record.source_index].ravel())[0, 1])
        foreign = np.flatnonzero(bank.labels != record.label)[: 50]
        other.append(np.mean([np.corrcoef(small, bank.ink[i].ravel())[0, 1] for i in foreign]))
    assert min(own) > 0.7
    assert np.mean(own) > np.mean(other) + 0.3


def test_fgvc_train_and_test_use_disjoint_samples_even_when_reused():
    """Per class, train and test draw from disjoint sklearn samples, also when the counts exceed the samples."""
    labels = digit_bank().labels
    for counts in (dict(train_per_class=60, test_per_class=20), dict(train_per_class=170, test_per_class=30)):
        plan = plan_fgvc(0, FgvcOptions(**counts))
        train = {p.source_index for p in plan if p.split == 'train'}
        test = {p.source_index for p in plan if p.split == 'test'}
        assert not train & test
        assert all(labels[p.source_index] == p.label for p in plan)
        assert len(plan) == 10 * sum(counts.values())


def test_api_errors(tmp_path):
    """Unknown layouts/options and bad values raise ValueError; a non-empty folder needs overwrite=True."""
    assert set(LAYOUTS) == {'cub', 'stanford_cars', 'fgvc_aircraft', 'veri776', 'msmt17', 'market1501', 'dukemtmcreid'}
    with pytest.raises(ValueError, match='unknown layout'):
        make_demo_data(tmp_path, 'imagenet')
    with pytest.raises(ValueError, match='num_cameras'):
        make_demo_data(tmp_path, 'cub', num_cameras=3)
    with pytest.raises(ValueError, match='clutter'):
        make_demo_data(tmp_path, 'cub', clutter=2.0)
    options = dict(train_per_class=1, test_per_class=1, image_size=32, digit_scale=(0.5, 0.5))
    assert make_demo_data(tmp_path, 'cub', **options) == tmp_path.resolve() / CUB_FOLDER
    with pytest.raises(FileExistsError):
        make_demo_data(tmp_path, 'cub', **options)
    make_demo_data(tmp_path, 'cub', overwrite=True, **options)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run tools/make_demo_data.py from the repo root with this interpreter."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))}
    return subprocess.run([sys.executable, 'tools/make_demo_data.py', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_and_reports(tmp_path):
    """The CLI writes the layout and prints the reader root and per-split counts."""
    result = _run_cli(str(tmp_path), '--layout', 'veri776', '--seed', '5', '--image-size', '32',
                      '--num-train-ids', '3', '--images-per-train-id', '2', '--num-test-ids', '2',
                      '--gallery-per-test-id', '2', '--num-cameras', '3')
    assert result.returncode == 0, result.stderr
    assert f'dataset root {tmp_path.resolve()}' in result.stdout
    assert re.search(r'train\s+6 images\s+3 identities', result.stdout)
    assert re.search(r'gallery\s+6 images\s+2 identities', result.stdout)  # 2 x (2 gallery + 1 query copy)
    assert len((tmp_path / VERI_FOLDER / VERI_NAME_LISTS['train']).read_text().splitlines()) == 6


def test_cli_rejects_bad_layout_and_option(tmp_path):
    """A bad --layout or an option the layout does not take exits non-zero with a clear message."""
    bad_layout = _run_cli(str(tmp_path), '--layout', 'imagenet')
    assert bad_layout.returncode != 0
    assert "invalid choice: 'imagenet'" in bad_layout.stderr
    bad_option = _run_cli(str(tmp_path), '--layout', 'cub', '--num-cameras', '3')
    assert bad_option.returncode != 0
    assert 'num_cameras' in bad_option.stderr
    assert not (tmp_path / CUB_FOLDER).exists()


def test_package_does_not_import_the_toolboxes():
    """dcal_plugin.demo_data stays free of mmengine/mmpretrain/torchreid (it only needs numpy, pillow, sklearn)."""
    code = ('import sys, dcal_plugin.demo_data; '
            'print(sorted(m for m in ("mmengine", "mmpretrain", "torchreid") if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'


@pytest.mark.parametrize('layout, reader', [('market1501', 'Market1501'), ('dukemtmcreid', 'DukeMTMCreID')])
def test_torchreid_reads_market1501_and_dukemtmc_reid(tmp_path, layout, reader):
    """torchreid's own readers find every image with the pid and 0-based camid written; train and test ids disjoint."""
    pytest.importorskip('torchreid')
    # attribute paths: the official torchreid 1.4.0 and PyPI's repackaging (torchreid.reid) both have them
    import torchreid

    dataset_class = getattr(torchreid.data.datasets.image, reader)
    data = build_demo_data(tmp_path, layout, seed=1, **SMALL_REID)
    assert data.root == tmp_path.resolve()
    dataset = dataset_class(root=str(data.root), verbose=False)
    assert sorted(item[:3] for item in dataset.query) == _pairs(data.split('query'), with_camera=True)
    assert sorted(item[:3] for item in dataset.gallery) == _pairs(data.split('gallery'), with_camera=True)
    assert sorted(item[0] for item in dataset.train) == sorted(str(r.path) for r in data.split('train'))
    assert dataset.num_train_pids == SMALL_REID['num_train_ids']
    train_ids = {r.label for r in data.split('train')}
    assert train_ids.isdisjoint({r.label for r in data.split('query')}) and min(train_ids) >= 1
    _assert_reid_identities(data)


def test_market1501_refuses_more_cameras_than_its_file_names_hold(tmp_path):
    with pytest.raises(ValueError, match='market1501 file names hold camera ids up to 6: num_cameras must be <= 6'):
        build_demo_data(tmp_path, 'market1501', num_cameras=7)
