"""An MMPretrain config's optimizer and learning-rate schedule as mmengine's Runner builds them, for
``recipe_check``."""
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope
from mmpretrain.registry import MODELS
from torch import nn

from ..recipe_check import STAND_IN_CLASSES, STAND_IN_VIT, RecipeSchedule, merge_equal_param_groups


def stand_in_model(cfg: Config) -> nn.Module:
    """The config's classifier with a narrow backbone (:data:`~dcal_plugin.recipe_check.STAND_IN_VIT`), no weights
    loaded.

    The config's depth (12 when it sets none), frozen stages and DCAL options are kept: layer-wise
    lr decay and frozen blocks act per block.
    """
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, **STAND_IN_VIT, checkpoint_path=None, pretrained=False)
    model_cfg.head = dict(model_cfg.head, in_channels=STAND_IN_VIT['embed_dim'], num_classes=STAND_IN_CLASSES)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(model_cfg)


def recipe_schedule(cfg: Config, model: nn.Module, epoch_length: int, world_size: int = 1) -> RecipeSchedule:
    """``cfg``'s optimizer on ``model`` (lr scaled as ``Runner.scale_lr``) and its param schedulers, ``epoch_length``
    iterations an epoch.

    As mmengine's Runner: the optimizer wrapper from ``optim_wrapper`` (its constructor and
    ``paramwise_cfg``), the lr times (batch × ``world_size``) / ``auto_scale_lr.base_batch_size``
    when enabled, the schedulers from ``PARAM_SCHEDULERS`` with ``epoch_length`` (so
    ``convert_to_iter_based`` works), stepped after each iteration or epoch as
    ``ParamSchedulerHook`` steps them.
    """
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        auto_scale_lr = cfg.get('auto_scale_lr') or {}
        if auto_scale_lr.get('enable', False):
            ratio = cfg.train_dataloader.batch_size * world_size / auto_scale_lr['base_batch_size']
            for group in optim_wrapper.optimizer.param_groups:
                group['lr'] *= ratio
        optim_wrapper.optimizer = merge_equal_param_groups(optim_wrapper.optimizer)
        schedulers = [PARAM_SCHEDULERS.build(dict(scheduler), default_args=dict(
            optimizer=optim_wrapper, epoch_length=epoch_length)) for scheduler in cfg.param_scheduler]
    per_iteration = [scheduler for scheduler in schedulers if not scheduler.by_epoch]
    per_epoch = [scheduler for scheduler in schedulers if scheduler.by_epoch]
    return RecipeSchedule(
        optimizer=optim_wrapper.optimizer,
        step_iteration=lambda: [scheduler.step() for scheduler in per_iteration],
        step_epoch=lambda: [scheduler.step() for scheduler in per_epoch],
        epochs=cfg.train_cfg.max_epochs, epoch_length=epoch_length)
