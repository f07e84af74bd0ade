"""Checkpoints of DCAL runs are plain data: torch's weights_only loading and mmengine's and mmpretrain's own entry
points read them."""
import os
import subprocess
import sys

import mmpretrain
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from dcal_plugin.mmpretrain import build_trained_model
from dcal_plugin.mmpretrain.plain_checkpoint_hook import from_plain, to_plain

from .conftest import REPO, small_config


@pytest.fixture(scope='module')
def run(digits_roots, tmp_path_factory):
    """One epoch of the small config; its config written to a file, as a user's would be."""
    work_dir = tmp_path_factory.mktemp('plain_run')
    cfg = small_config(digits_roots['cub'], work_dir)
    runner = RUNNERS.build(cfg)
    runner.train()
    cfg.dump(str(work_dir / 'config.py'))
    return cfg, work_dir, runner.message_hub.get_scalar('train/loss').data


def test_the_checkpoint_loads_with_weights_only_and_keeps_the_loss_history(run):
    _, work_dir, (losses, counts) = run
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)
    history = from_plain(checkpoint['message_hub'])['log_scalars']['train/loss']
    assert isinstance(history, HistoryBuffer)
    np.testing.assert_array_equal(history.data[0], losses)
    np.testing.assert_array_equal(history.data[1], counts)


def test_plain_form_round_trips_history_arrays_and_numpy_scalars():
    value = dict(buffer=HistoryBuffer([1.5, 2.0], [1, 2], max_length=7), array=np.arange(3.0),
                 scalar=np.float64(0.25), nested=[(np.int64(3), 'text')])
    plain = to_plain(value)
    assert plain['scalar'] == 0.25 and type(plain['scalar']) is float and plain['nested'] == [(3, 'text')]
    restored = from_plain(plain)
    assert restored['buffer'].max_length == 7 and restored['buffer'].data[0].tolist() == [1.5, 2.0]
    np.testing.assert_array_equal(restored['array'], np.arange(3.0))


def test_a_plain_mmengine_runner_resumes_it(run, tmp_path):
    cfg, work_dir, (losses, _) = run
    cfg = cfg.copy()
    cfg.pop('runner_type')
    cfg.train_cfg.max_epochs = 2
    cfg.param_scheduler = []
    cfg.update(work_dir=str(tmp_path), resume=True, load_from=str(work_dir / 'epoch_1.pth'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert (tmp_path / 'epoch_2.pth').is_file() and runner.epoch == 2
    resumed = runner.message_hub.get_scalar('train/loss').data[0]
    np.testing.assert_array_equal(resumed[:len(losses)], losses)  # epoch 1's history came back
    assert len(resumed) == 2 * len(losses)


def test_load_from_fine_tunes_from_it(run, tmp_path):
    cfg, work_dir, _ = run
    cfg = cfg.copy()
    cfg.update(work_dir=str(tmp_path), load_from=str(work_dir / 'epoch_1.pth'))
    RUNNERS.build(cfg).train()
    assert (tmp_path / 'epoch_1.pth').is_file()


def test_mmpretrain_get_model_and_inferencer_read_it(run):
    from mmpretrain import ImageClassificationInferencer, get_model

    cfg, work_dir, _ = run
    checkpoint = str(work_dir / 'epoch_1.pth')
    model = get_model(cfg, pretrained=checkpoint)
    reference, _ = build_trained_model(cfg, checkpoint)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=checkpoint)
    [result] = inferencer(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    assert 0 <= result['pred_label'] < 10 and result['pred_score'] > 0


@pytest.mark.parametrize('precision', ['bfloat16', 'amp-bfloat16'])
def test_mmpretrain_inferencer_in_bfloat16_predicts_as_float32(run, precision):
    """Its float32 ``pred_scores`` array, within four bfloat16 steps of a probability near 1 (8 bits: 2^-8 each)."""
    from mmpretrain import ImageClassificationInferencer

    from dcal_plugin.precision import run_in_precision

    cfg, work_dir, _ = run
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=str(work_dir / 'epoch_1.pth'))
    images = list(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))
    want = inferencer(images)
    with run_in_precision(inferencer.model, precision):
        got = inferencer(images)
    for half, full in zip(got, want):
        assert half['pred_scores'].dtype == np.float32
        np.testing.assert_allclose(half['pred_scores'], full['pred_scores'], atol=2 ** -6)
        assert half['pred_label'] == full['pred_label']


@pytest.mark.slow
def test_mmpretrains_own_test_tool_reads_it(run, tmp_path):
    _, work_dir, _ = run
    tool = os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'tools', 'test.py')
    proc = subprocess.run([sys.executable, tool, str(work_dir / 'config.py'), str(work_dir / 'epoch_1.pth'),
                           '--work-dir', str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [metrics] = tmp_path.glob('*/*.json')  # mmengine's record of the test metrics
    assert 'accuracy/top1' in metrics.read_text() and 'dcal/glca_top1' in metrics.read_text()


@pytest.mark.slow
def test_mmpretrains_own_train_tool_resumes_it(run, tmp_path):
    import shutil

    _, work_dir, _ = run
    shutil.copy(work_dir / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    tool = os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    proc = subprocess.run([sys.executable, tool, str(work_dir / 'config.py'), '--work-dir', str(tmp_path), '--resume',
                           '--cfg-options', 'train_cfg.max_epochs=2', 'param_scheduler=[]', 'log_level=INFO'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'resumed epoch: 1' in proc.stdout + proc.stderr and 'Epoch(train) [2]' in proc.stdout + proc.stderr
    assert (tmp_path / 'epoch_2.pth').is_file()


@pytest.mark.slow
def test_publish_model_keeps_weights_and_meta_and_names_the_hash(run, tmp_path):
    import hashlib

    _, work_dir, _ = run
    proc = subprocess.run([sys.executable, 'tools/publish_model.py', str(work_dir / 'epoch_1.pth'),
                           str(tmp_path / 'dcal_digits.pth')], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = proc.stdout.strip().splitlines()[-1]
    digest = hashlib.sha256(open(published, 'rb').read()).hexdigest()
    assert published == str(tmp_path / f'dcal_digits-{digest[:8]}.pth')
    loaded = torch.load(published, map_location='cpu', weights_only=True)
    assert set(loaded) == {'state_dict', 'meta'} and loaded['meta']['dataset_meta']['classes']


@pytest.mark.slow
def test_a_checkpoint_of_the_old_format_is_refused_with_what_to_do(run, tmp_path):
    cfg, work_dir, _ = run
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)
    checkpoint['message_hub'] = from_plain(checkpoint['message_hub'])  # as mmengine wrote it before the hook
    old = tmp_path / 'old.pth'
    torch.save(checkpoint, old)
    with pytest.raises(ValueError, match=r'unpickling them can run code stored in the file.*Only if your own run '
                                         r'wrote this file.*tools/publish_model.py --trust-pickle .*--trust-pickle '
                                         r'RUNS THE CODE THE FILE HOLDS: never use it on a file from anyone else'):
        build_trained_model(cfg, str(old))
    proc = subprocess.run([sys.executable, 'tools/publish_model.py', '--trust-pickle', str(old),
                           str(tmp_path / 'converted.pth')], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    build_trained_model(cfg, proc.stdout.strip().splitlines()[-1])
