"""The fine-tuning checks through mmengine's Runner: WeightDriftHook, and recipe_schedule's lr against the Runner's."""
import copy

import pytest
import timm
import torch
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

from dcal_plugin.mmpretrain import WeightDriftHook
from dcal_plugin.mmpretrain.recipe_schedule import recipe_schedule, stand_in_model

from .conftest import REPO, small_config


class LrRecorder(Hook):
    """Records the first parameter group's lr at every training iteration."""

    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.optimizer.param_groups[0]['lr'])


def test_weight_drift_is_measured_from_the_pretrained_checkpoint(digits_roots, tmp_path):
    torch.manual_seed(4)
    source = timm.create_model('deit_tiny_patch16_224', pretrained=False, num_classes=45, img_size=32, patch_size=8,
                               depth=2)
    checkpoint = tmp_path / 'source.pth'
    torch.save(source.state_dict(), checkpoint)
    cfg = small_config(digits_roots['cub'], tmp_path / 'work', max_epochs=2)
    cfg.model.backbone.update(checkpoint_path=str(checkpoint), patch_size=8)
    runner = RUNNERS.build(cfg)
    [hook] = [hook for hook in runner.hooks if isinstance(hook, WeightDriftHook)]
    runner.train()
    assert len(hook.history) == 2
    start = source.state_dict()
    torch.testing.assert_close(hook.reference['backbone.dcal.vit.blocks.1.mlp.fc1.weight'],
                               start['blocks.1.mlp.fc1.weight'])
    final = {name[len('backbone.dcal.vit.'):]: value for name, value in runner.model.state_dict().items()
             if name.startswith('backbone.dcal.vit.blocks.0.')}
    moved = sum((final[name] - start[name]).square().sum() for name in final).sqrt()
    assert hook.history[-1]['backbone.dcal.vit.blocks.0'].drift == pytest.approx(
        (moved / sum(start[name].square().sum() for name in final).sqrt()).item(), rel=1e-4)
    assert 0 < hook.history[0]['backbone.dcal.vit.blocks.0'].drift < hook.history[1]['backbone.dcal.vit.blocks.0'].drift


def test_recipe_schedule_steps_the_lr_as_the_runner_does(digits_roots, tmp_path):
    """The paper's schedule (iteration warm-up, epoch cosine, auto_scale_lr) over 3 epochs: the same lr every
    iteration."""
    from mmengine.config import Config
    paper = Config.fromfile(str(REPO / 'configs' / 'dcal_deit-tiny_cub.py'))
    cfg = small_config(digits_roots['cub'], tmp_path, max_epochs=3)
    cfg.optim_wrapper, cfg.auto_scale_lr = paper.optim_wrapper, paper.auto_scale_lr
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1.5, convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=1, end=3)]
    recorder = LrRecorder()
    runner = RUNNERS.build(copy.deepcopy(cfg))
    runner.register_hook(recorder)
    runner.train()
    schedule = recipe_schedule(cfg, stand_in_model(cfg), epoch_length=len(runner.train_dataloader))
    lrs = []
    for _ in range(3):
        for _ in range(schedule.epoch_length):
            lrs.append(schedule.optimizer.param_groups[0]['lr'])
            schedule.step_iteration()
        schedule.step_epoch()
    assert lrs == pytest.approx(recorder.lrs, rel=1e-9)
    assert max(lrs) == pytest.approx(5e-4 * 8 / 512, rel=0.05)  # the batch rule at batch 8


def test_the_stand_in_keeps_the_configs_depth_frozen_stages_and_layer_decay():
    """Frozen blocks get no gradient and are not tracked; layer-wise lr decay reaches every block of all 12."""
    from mmengine.config import Config

    from dcal_plugin.recipe_check import RecipeSchedule, make_pretrained_like_, norm_retention
    cfg = Config.fromfile(str(REPO / 'configs' / 'dcal_deit-tiny_cub.py'))
    cfg.model.backbone.frozen_stages = 2
    cfg.optim_wrapper = dict(type='OptimWrapper', constructor='LearningRateDecayOptimWrapperConstructor',
                             optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                             paramwise_cfg=dict(layer_decay_rate=0.5))
    model = stand_in_model(cfg)
    assert len(model.backbone.dcal.vit.blocks) == 12
    make_pretrained_like_(model)
    frozen = model.backbone.dcal.vit.blocks[1].attn.qkv.weight.detach().clone()
    schedule = recipe_schedule(cfg, model, epoch_length=5)
    lr_of = {id(p): group['lr'] for group in schedule.optimizer.param_groups for p in group['params']}
    blocks = model.backbone.dcal.vit.blocks
    assert lr_of[id(blocks[3].attn.qkv.weight)] == pytest.approx(2 * lr_of[id(blocks[2].attn.qkv.weight)])
    retention = norm_retention(model, RecipeSchedule(schedule.optimizer, schedule.step_iteration, schedule.step_epoch,
                                                     epochs=1, epoch_length=5))
    assert not any('.blocks.0.' in name or '.blocks.1.' in name for name in retention.kept)
    assert 'backbone.dcal.vit.blocks.2.attn.qkv.weight' in retention.kept
    torch.testing.assert_close(model.backbone.dcal.vit.blocks[1].attn.qkv.weight, frozen, rtol=0, atol=0)
