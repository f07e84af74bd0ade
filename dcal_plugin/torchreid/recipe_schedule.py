"""A torchreid yaml config's optimizer and learning-rate schedule as ``tools/train_reid.py`` builds them, for
``recipe_check``."""
from yacs.config import CfgNode

from dcal_plugin.core import DCALViT

from ..recipe_check import STAND_IN_CLASSES, STAND_IN_VIT, RecipeSchedule, merge_equal_param_groups
from .config import optimizer_kwargs, scheduler_kwargs
from .model import DCALReID, build_dcal_reid
from .optim import build_optimizer, build_scheduler


def stand_in_model(cfg: CfgNode) -> DCALReID:
    """The config's DCAL Re-ID model with a narrow backbone (:data:`~dcal_plugin.recipe_check.STAND_IN_VIT`).

    The config's depth (``model.timm_kwargs.depth``, else 12) and DCAL options are kept.
    """
    depth = {'depth': cfg.model.timm_kwargs.depth} if 'depth' in cfg.model.timm_kwargs else {}
    return build_dcal_reid(num_classes=STAND_IN_CLASSES, **STAND_IN_VIT, **depth,
                           **{name: cfg.model[name] for name in DCALViT.option_defaults()})


def recipe_schedule(cfg: CfgNode, model: DCALReID, epoch_length: int) -> RecipeSchedule:
    """``cfg``'s optimizer on ``model`` and its scheduler (stepped once per epoch, as torchreid's engine),
    ``epoch_length`` iterations an epoch."""
    optimizer = merge_equal_param_groups(build_optimizer(model, **optimizer_kwargs(cfg)))
    scheduler = build_scheduler(optimizer, **scheduler_kwargs(cfg))
    return RecipeSchedule(optimizer=optimizer, step_iteration=lambda: None, step_epoch=scheduler.step,
                          epochs=cfg.train.max_epoch, epoch_length=epoch_length)
