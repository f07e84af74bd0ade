"""A test-only hook: every rank of a distributed run saves its final weights, world size and iterations."""
import os

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


@HOOKS.register_module(force=True)
class RankWeightsHook(Hook):
    """Save ``rank<R>_weights.pth``: this rank's state_dict, the world size and the iterations run."""

    def after_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        record = dict(state_dict=model.state_dict(), world_size=get_world_size(), iter=runner.iter)
        torch.save(record, os.path.join(runner.work_dir, f'rank{get_rank()}_weights.pth'))
