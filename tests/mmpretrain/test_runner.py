"""DCAL trains and validates through mmengine's Runner on digits data read by mmpretrain's own dataset classes."""
import json

import pytest
import torch
from mmengine.registry import RUNNERS
from PIL import Image

from .conftest import DATASETS, small_config


def scalars(work_dir):
    """The run's logged scalars (mmengine's scalars.json), one dict per line."""
    [path] = work_dir.glob('*/vis_data/scalars.json')
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize('layout', list(DATASETS))
def test_train_and_validate_through_the_runner(digits_roots, tmp_path, layout):
    runner = RUNNERS.build(small_config(digits_roots[layout], tmp_path, layout))
    runner.train()
    assert type(runner.train_dataloader.dataset).__name__ == DATASETS[layout]['type']
    assert len(runner.train_dataloader.dataset) == 40  # 10 classes × 4 (Aircraft: trainval)
    logged = scalars(tmp_path)
    train_rows = [row for row in logged if 'loss' in row]
    assert len(train_rows) == len(runner.train_dataloader)  # logged every iteration
    for row in train_rows:
        for key in ('loss_sa', 'loss_glca', 'loss_pwca', 'ce_sa', 'ce_glca', 'ce_pwca',
                    'weight_sa', 'weight_glca', 'weight_pwca'):
            assert key in row, key
        assert row['loss'] == pytest.approx(row['loss_sa'] + row['loss_glca'] + row['loss_pwca'], rel=1e-4)
    val = [row for row in logged if 'accuracy/top1' in row][-1]
    assert val['dcal/fused_top1'] == pytest.approx(val['accuracy/top1'])
    for key in ('dcal/sa_top1', 'dcal/glca_top1', 'accuracy/top5'):
        assert 0.0 <= val[key] <= 100.0
    assert (tmp_path / 'epoch_1.pth').is_file()
    pictures = sorted(tmp_path.glob('*/vis_data/vis_image/rollout_*_1.png'))
    assert len(pictures) == 4
    with Image.open(pictures[0]) as picture:
        assert picture.format == 'PNG' and picture.size == (3 * 32 + 8, 32)


def test_loss_weights_are_learned_and_logged(digits_roots, tmp_path):
    runner = RUNNERS.build(small_config(digits_roots['cub'], tmp_path))
    runner.train()
    head = runner.model.head
    weights = torch.exp(-head.loss_weighting.log_vars.detach())
    assert not torch.equal(head.loss_weighting.log_vars.detach(), torch.zeros(3))  # trained, not frozen at init
    last = [row for row in scalars(tmp_path) if 'loss' in row][-1]
    # the logged weights are those used by the last iteration, before its optimiser step
    assert last['weight_sa'] == pytest.approx(weights[0].item(), abs=1e-2)


def test_rollout_hook_writes_to_tensorboard_when_configured(digits_roots, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_config(digits_roots['cub'], tmp_path)
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
    RUNNERS.build(cfg).train()
    [events] = tmp_path.glob('*/vis_data/events.out.tfevents.*')
    accumulator = EventAccumulator(str(events.parent), size_guidance={'images': 0})
    accumulator.Reload()
    assert {f'rollout_{i}' for i in range(4)} <= set(accumulator.Tags()['images'])
    assert 'loss_glca' in accumulator.Tags()['scalars']


def test_runners_built_in_the_same_second_log_into_their_own_folders(digits_roots, tmp_path):
    """mmengine's default experiment name has a resolution of one second; DCALRunner's does not collide."""
    first = RUNNERS.build(small_config(digits_roots['cub'], tmp_path / 'first'))
    second = RUNNERS.build(small_config(digits_roots['cub'], tmp_path / 'second'))
    assert first.experiment_name != second.experiment_name
    assert first.experiment_name.startswith('dcal_deit-tiny_digits-cub_')
    second.train()
    assert len(scalars(tmp_path / 'second')) > 0 and not list((tmp_path / 'first').glob('*/vis_data/scalars.json'))
    named = small_config(digits_roots['cub'], tmp_path / 'named')
    named.experiment_name = 'mine'
    assert RUNNERS.build(named).experiment_name.startswith('mine_')


def test_the_model_learns_its_training_images(digits_roots, tmp_path):
    """60 iterations on 40 training images: validated on those images, every branch is well above chance (10%)."""
    cfg = small_config(digits_roots['cub'], tmp_path, max_epochs=12)
    cfg.train_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    cfg.train_dataloader.dataset.pipeline = cfg.train_pipeline
    cfg.val_dataloader.dataset.split = 'train'
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook['type'] != 'AttentionRolloutHook']
    cfg.randomness = dict(seed=0)
    RUNNERS.build(cfg).train()
    val = [row for row in scalars(tmp_path) if 'accuracy/top1' in row]
    assert len(val) == 12 and val[0]['accuracy/top1'] < val[-1]['accuracy/top1']
    for key in ('accuracy/top1', 'dcal/sa_top1', 'dcal/glca_top1'):
        assert val[-1][key] >= 30.0, (key, val[-1])
