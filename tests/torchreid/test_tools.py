"""tools/train_reid.py and tools/demo_reid.py as a user runs them."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dcal_plugin.layouts import VERI_FOLDER, VERI_NAME_LISTS

pytest.importorskip('torchreid')

from .helpers import TINY_MODEL  # noqa: E402

pytestmark = pytest.mark.slow  # the tools run as subprocesses

ROOT = Path(__file__).resolve().parents[2]
TINY_YAML = """
model:
  name: 'dcal_deit_tiny'
  pretrained: False
  timm_kwargs: {timm_kwargs}
data:
  sources: ['msmt17']
  targets: ['msmt17']
  height: 32
  width: 32
  workers: 0
train:
  batch_size: 8
  max_epoch: 3
  warmup_epochs: 1
  print_freq: 1
test:
  batch_size: 16
  ranks: [1, 5, 10]
"""


def tool(script, *args):
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / script), *map(str, args)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def results_table(out):
    """The rows of the DCAL results table: {feature: [mAP, Rank-1, Rank-5, Rank-10]} (percent strings)."""
    rows = re.findall(r'^  (SA\+GLCA|SA|GLCA|random ranking) +([\d.]+%) +([\d.]+%) +([\d.]+%) +([\d.]+%)$', out, re.M)
    return {row[0]: row[1:] for row in rows}


def test_train_then_test_only_from_the_checkpoint(msmt_data, tmp_path):
    config = tmp_path / 'tiny.yaml'
    config.write_text(TINY_YAML.format(timm_kwargs=dict(TINY_MODEL)))
    log = tmp_path / 'log'
    out = tool('train_reid.py', '--config-file', config, '--root', msmt_data.root, 'data.save_dir', log,
               'train.max_epoch', 2)
    assert 'epoch: [2/2]' in out and 'epoch: [3/' not in out  # the override beat the yaml
    trained = results_table(out)
    assert sorted(trained) == ['GLCA', 'SA', 'SA+GLCA', 'random ranking']
    assert f'mAP: {trained["SA+GLCA"][0]}' in out  # the table's concatenated feature is torchreid's own test
    assert list(log.glob('train.log-*')) and (log / 'model' / 'model.pth.tar-2').is_file()

    out = tool('train_reid.py', '--config-file', config, '--root', msmt_data.root, 'data.save_dir', log,
               'test.evaluate', True, 'model.load_weights', log / 'model' / 'model.pth.tar-2')
    assert 'Start training' not in out and list(log.glob('test.log-*'))
    assert results_table(out) == trained


def test_demo_reid_writes_digits_and_prints_every_feature_beside_chance(tmp_path):
    small = ['num_train_ids=6', 'images_per_train_id=4', 'num_test_ids=4', 'gallery_per_test_id=3', 'num_cameras=4']
    out = tool('demo_reid.py', '--out', tmp_path, *[arg for option in small for arg in ('--data', option)],
               '--', 'train.max_epoch', 1, 'train.batch_size', 8, 'test.batch_size', 16)  # a -- separator is dropped
    assert (tmp_path / 'data' / VERI_FOLDER / VERI_NAME_LISTS['query']).read_text().count('.jpg') == 4
    assert sorted(results_table(out)) == ['GLCA', 'SA', 'SA+GLCA', 'random ranking']
    assert 'demo-reid took' in out and (tmp_path / 'log' / 'model' / 'model.pth.tar-1').is_file()
