"""tools/train.py, tools/test.py and tools/vis_rollout.py as a user runs them."""
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import REPO, small_config


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
