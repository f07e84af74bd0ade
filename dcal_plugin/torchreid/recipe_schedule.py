"""A torchreid yaml config's optimizer and learning-rate schedule as ``tools/train_reid.py`` builds them, for ``recipe_check``."""
from yacs.config import CfgNode

from ..recipe_check import RecipeSchedule, merge_equal_param_groups
from .config import optimizer_kwargs, scheduler_kwargs
from .model import DCALReID, build_dcal_reid
from .optim import build_optimizer, build_scheduler

# The stand-in model whose parameters the recipe's optimizer groups by name: a 1-block DeiT of width 24 (recipes do
# not depend on the model's size)
STAND_IN = dict(model_name='deit_tiny_patch16_224', num_classes=10, img_size=(32, 32), patch_size=8, depth=1,
                embed_dim=24, num_heads=3)


def stand_in_model(cfg: CfgNode) -> DCALReID:
    """The config's DCAL Re-ID model with a small backbone (:data:`STAND_IN`), its DCAL options kept."""
    return build_dcal_reid(local_query_ratio=cfg.model.local_query_ratio, use_glca=cfg.model.use_glca,
                           use_pwca=cfg.model.use_pwca, **STAND_IN)


def recipe_schedule(cfg: CfgNode, model: DCALReID, epoch_length: int) -> RecipeSchedule:
    """``cfg``'s optimizer on ``model`` and its scheduler (stepped once per epoch, as torchreid's engine), ``epoch_length`` iterations an epoch."""
    optimizer = merge_equal_param_groups(build_optimizer(model, **optimizer_kwargs(cfg)))
    scheduler = build_scheduler(optimizer, **scheduler_kwargs(cfg))
    return RecipeSchedule(optimizer=optimizer, step_iteration=lambda: None, step_epoch=scheduler.step,
                          epochs=cfg.train.max_epoch, epoch_length=epoch_length)
