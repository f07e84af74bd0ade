"""tools/train.py, tools/test.py, tools/vis_rollout.py and tools/localization.py as a user runs them."""
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import REPO, load_tool, small_config


pytestmark = pytest.mark.slow  # the tools run as subprocesses

def run_tool(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def trained(digits_roots, tmp_path_factory):
    """(config file, checkpoint) of a 1-epoch run through tools/train.py."""
    folder = tmp_path_factory.mktemp('tools')
    config = folder / 'small.py'
    cfg = small_config(digits_roots['cub'], folder / 'unused')
    cfg.log_level = 'INFO'
    cfg.dump(str(config))
    output = run_tool(REPO / 'tools' / 'train.py', config, '--work-dir', folder / 'work',
                      '--cfg-options', 'train_cfg.max_epochs=1')
    assert 'Epoch(train) [1][5/5]' in output and 'eta:' in output  # progress with ETA
    return config, folder / 'work' / 'epoch_1.pth'


def test_test_tool_reports_every_branch(trained, tmp_path):
    config, checkpoint = trained
    output = run_tool(REPO / 'tools' / 'test.py', config, checkpoint, '--work-dir', tmp_path,
                      '--out', tmp_path / 'predictions.pkl')
    for key in ('accuracy/top1', 'dcal/sa_top1', 'dcal/glca_top1', 'dcal/fused_top1'):
        assert key in output
    assert re.search(r'DCAL test top-1 \(%\): SA [\d.]+  GLCA [\d.]+  fused [\d.]+  \(chance 10.0\)', output)
    assert (tmp_path / 'predictions.pkl').stat().st_size > 0
    sa_only = run_tool(REPO / 'tools' / 'test.py', config, checkpoint, '--work-dir', tmp_path, '--sa-only')
    assert 'dcal/sa_top1' in sa_only and 'dcal/glca_top1' not in sa_only
    assert re.search(r'DCAL test top-1 \(%\): SA [\d.]+  fused [\d.]+  \(chance', sa_only)


@pytest.mark.parametrize('precision', ['bfloat16', 'amp-bfloat16'])
def test_test_tool_in_bfloat16_reports_what_float32_does(precision, trained, tmp_path):
    """``--precision``: each branch's top-1 in bfloat16 is float32's up to one flipped image of the 20 (5 points): a
    bfloat16 logit keeps 8 bits, so only a near-tie may flip."""
    config, checkpoint = trained
    pattern = r'DCAL test top-1 \(%\): SA ([\d.]+)  GLCA ([\d.]+)  fused ([\d.]+)'
    top1 = {name: [float(value) for value in re.search(pattern, run_tool(
        REPO / 'tools' / 'test.py', config, checkpoint, '--work-dir', tmp_path / name, '--precision', name)).groups()]
        for name in ('float32', precision)}
    assert top1[precision] == pytest.approx(top1['float32'], abs=5.0)


def test_vis_rollout_writes_side_by_side_pictures(trained, digits_roots, tmp_path):
    config, checkpoint = trained
    images = sorted((digits_roots['cub'] / 'images').rglob('*.jpg'))[:2]
    output = run_tool(REPO / 'tools' / 'vis_rollout.py', config, checkpoint, *images, '--out', tmp_path)
    assert output.count('fused') == 2 and 'GLCA' in output
    for image in images:
        with Image.open(tmp_path / f'{image.stem}_rollout.png') as picture:
            assert picture.format == 'PNG' and picture.size == (3 * 32 + 8, 32)
    output = run_tool(REPO / 'tools' / 'vis_rollout.py', config, checkpoint, '--test-set', 3, '--zoom', 2,
                      '--out', tmp_path / 'test')
    pictures = sorted((tmp_path / 'test').glob('*_rollout.png'))
    assert len(pictures) == 3 and output.count('-> ') == 3
    assert len({picture.name.split('_')[0] for picture in pictures}) == 3  # spread over the test set's classes
    with Image.open(pictures[0]) as picture:
        assert picture.size == (2 * (3 * 32 + 8), 2 * 32)


def test_localization_scores_against_a_direct_count(trained, digits_roots, tmp_path):
    """tools/localization.py: the chance level equals a direct per-patch count of the boxes; a model compared with
    itself ties."""
    import json

    import numpy as np
    config, checkpoint = trained
    output = run_tool(REPO / 'tools' / 'localization.py', config, checkpoint, '--baseline', checkpoint,
                      '--out-dir', tmp_path, '--grid', 3, '--zoom', 2)
    assert '| DCAL |' in output and '| baseline |' in output
    result = json.loads((tmp_path / 'localization.json').read_text())
    root = digits_roots['cub']
    test_ids = [line.split()[0] for line in (root / 'train_test_split.txt').read_text().splitlines()
                if line.split()[1] == '0']
    boxes = {fields[0]: [float(v) for v in fields[1:]] for fields in
             (line.split() for line in (root / 'bounding_boxes.txt').read_text().splitlines())}
    shares = []
    for key in test_ids:  # 32x32 inputs, no resize in the small config: 4x4 patches of 8x8 pixels
        x, y, w, h = boxes[key]
        pixels = np.zeros((32, 32))
        pixels[round(y):round(y + h), round(x):round(x + w)] = 1
        inside = [pixels[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8].mean() >= 0.5 for r in range(4) for c in range(4)]
        shares.append(100 * np.mean(inside))
    assert result['images'] == len(test_ids) == 20 and result['local_queries'] == 2
    assert result['results']['DCAL']['chance'] == pytest.approx(np.mean(shares))
    assert result['results']['baseline'] == result['results']['DCAL']
    for value in result['results']['DCAL'].values():
        assert 0 <= value <= 100
    with Image.open(tmp_path / 'rollout_grid.png') as picture:
        assert picture.size == (2 * (3 * 32 + 8), 3 * (2 * 32 + 4))


@pytest.mark.parametrize('precision', ['bfloat16', 'amp-bfloat16'])
def test_vis_rollout_and_localization_in_bfloat16_agree_with_float32(precision, trained, digits_roots, tmp_path,
                                                                      capsys):
    """``--precision``: a bfloat16 model or bfloat16 autocast draws the same pictures' layout, predicts the same
    labels and finds the boxes as float32 does, within one image's top-R share (100 / 20 images / R=2 = 2.5)."""
    config, checkpoint = trained
    images = sorted((digits_roots['cub'] / 'images').rglob('*.jpg'))[:2]
    printed = {}
    for name in ('float32', precision):
        load_tool('vis_rollout').main([*map(str, [config, checkpoint, *images]), '--out', str(tmp_path / name),
                                      '--precision', name])
        printed[name] = re.findall(r'(\w+) (\d+) \(', capsys.readouterr().out)  # branch and label of each image
    assert printed[precision] == printed['float32'] and len(printed['float32']) == 2 * 3
    for image in images:
        with Image.open(tmp_path / precision / f'{image.stem}_rollout.png') as picture:
            assert picture.size == (3 * 32 + 8, 32)
    localization = load_tool('localization')
    results = {name: localization.main([str(config), str(checkpoint), '--out-dir', str(tmp_path / name),
                                        '--grid', '2', '--precision', name])['DCAL']
               for name in ('float32', precision)}
    assert results[precision]['chance'] == results['float32']['chance']
    for key in ('rollout', 'last-layer attention'):
        assert results[precision][key] == pytest.approx(results['float32'][key], abs=2.5)
    assert (tmp_path / precision / 'rollout_grid.png').is_file()


def test_box_mask_follows_the_test_pipelines_resize_and_crop():
    """A box on a 40x32 (HxW) image, through ResizeEdge(short 16) + CenterCrop(16): rows scale by 1/2 and lose 2 on each
    side."""
    import numpy as np
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    localization = load_tool('localization')
    init_default_scope('mmpretrain')
    pipeline = Compose([dict(type='ResizeEdge', scale=16, edge='short'), dict(type='CenterCrop', crop_size=16),
                        dict(type='PackInputs')])
    mask = localization.box_mask(pipeline, (40, 32), (8.0, 12.0, 16.0, 16.0))  # x 8..24, y 12..28
    want = np.zeros((16, 16), bool)
    want[4:12, 4:12] = True  # resized: x 4..12, y 6..14 of 20 rows; cropped rows 2..18 -> y 4..12
    assert mask.shape == (16, 16) and (mask == want).mean() > 0.95
    assert localization.patches_inside(want, (4, 4)).reshape(4, 4).tolist() == [
        [False] * 4, [False, True, True, False], [False, True, True, False], [False] * 4]


@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='the refusal is for machines without a GPU')
def test_train_tool_refuses_amp_at_once_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/train.py', 'configs/dcal_deit-tiny_digits-cub.py', '--amp',
                           '--work-dir', str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--amp: mmengine's AmpOptimWrapper trains on a GPU" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before the runner made its work dir


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_train_tool_scales_the_loss_of_float16_amp_only(dtype, monkeypatch):
    """mmengine's AmpOptimWrapper builds a GradScaler either way; for bfloat16 it is switched off (no scaling, no
    sync)."""
    from mmengine.config import Config

    train = load_tool('train')
    monkeypatch.setattr(train, 'check_amp_device', lambda: None)
    args = train.parse_args(['configs/dcal_deit-tiny_digits-cub.py', '--amp', '--cfg-options',
                             f'optim_wrapper.dtype={dtype}'])
    cfg = train.apply_args(Config.fromfile(REPO / 'configs' / 'dcal_deit-tiny_digits-cub.py'), args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == ('dynamic' if dtype == 'float16' else dict(enabled=False))
