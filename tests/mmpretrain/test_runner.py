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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_diverged_run_stops_at_its_first_non_finite_loss_and_keeps_the_finite_checkpoint(digits_roots, tmp_path):
    from mmengine.hooks import Hook

    from dcal_plugin.core import NonFiniteLossError

    runner = RUNNERS.build(small_config(digits_roots['cub'], tmp_path, max_epochs=2))
    per_epoch = len(runner.train_dataloader)

    class NanGlcaClassifierAtEpoch2Iteration2(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == per_epoch + 1:
                runner.model.head.glca_fc.weight.data.fill_(float('nan'))

    runner.register_hook(NanGlcaClassifierAtEpoch2Iteration2())
    with pytest.raises(NonFiniteLossError, match=rf"epoch 2, iteration {per_epoch + 2}: the glca branch's weighted "
                                                 r"loss \(loss_glca\) is nan"):
        runner.train()
    assert (tmp_path / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')
    assert not (tmp_path / 'epoch_2.pth').exists()
    state = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_the_classifier_trains_and_predicts_under_cpu_bf16_autocast(digits_roots, tmp_path):
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    cfg = small_config(digits_roots['cub'], tmp_path)
    model = MODELS.build(cfg.model)
    images = torch.randn(4, 3, 32, 32)
    samples = [DataSample().set_gt_label(label) for label in (0, 1, 2, 3)]
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model(images, samples, mode='loss')
    assert {'loss_sa', 'loss_glca', 'loss_pwca'} <= set(losses)
    sum(value for key, value in losses.items() if key.startswith('loss')).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        predictions = model(images, samples, mode='predict')
    assert all(torch.isfinite(sample.pred_score).all() for sample in predictions)


@pytest.mark.slow
def test_mmengines_compile_option_trains_the_dcal_classifier(digits_roots, tmp_path):
    cfg = small_config(digits_roots['cub'], tmp_path)
    cfg.compile = dict(backend='aot_eager')  # compile=True is inductor's default: tests/core/test_compile.py runs that
    runner = RUNNERS.build(cfg)
    runner.train()
    assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable')  # mmengine compiled the train step
    train_rows = [row for row in scalars(tmp_path) if 'loss' in row]
    assert train_rows and all(row['loss'] == row['loss'] for row in train_rows)  # finite (not NaN)
