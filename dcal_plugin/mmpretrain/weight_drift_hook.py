"""``WeightDriftHook``: after every epoch, how far each block's weights have moved from where training started."""
from typing import Dict, List

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmpretrain.registry import HOOKS
from torch import nn

from ..recipe_check import WeightChange, weight_changes
from .unwrap import unwrap


@HOOKS.register_module()
class WeightDriftHook(Hook):
    """Log each block's (and embedding's, norm's, GLCA's) ``‖w - w₀‖ / ‖w₀‖`` and ``‖w‖ / ‖w₀‖`` after every epoch.

    ``history`` keeps them per epoch. A coupled weight decay that erases pretrained weights shows as
    norms falling epoch after epoch (torch's ``Adam(weight_decay=0.05)`` took 14% off
    ``blocks.0.attn.qkv`` in 940 demo steps, AdamW nothing: docs/rehearsal.md); the drift says how far
    fine-tuning carried each block (2% at the paper's lr over the demo's steps, 24% at the demo's).
    ``w₀`` (``reference``, by parameter name) are the weights at the start of ``runner.train()``:
    after ``init_weights`` (the pretrained checkpoint), or the resumed ones after a resume.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self.history: List[Dict[str, WeightChange]] = []
        self.reference: Dict[str, torch.Tensor] = {}

    def before_train(self, runner: Runner) -> None:
        """Keep a copy of the weights training starts from."""
        self.reference = {name: parameter.detach().clone()
                          for name, parameter in self._model(runner).named_parameters()}

    def after_train_epoch(self, runner: Runner) -> None:
        """Compute, log and keep each group's relative change and norm."""
        changes = weight_changes(self.reference, self._model(runner))
        self.history.append(changes)
        shown = ', '.join(f'{group.split("vit.")[-1].split("dcal.")[-1]} {100 * change.drift:.2f}% '
                          f'({100 * (change.norm - 1):+.2f}%)' for group, change in changes.items())
        print_log(f'after epoch {runner.epoch + 1}, each block\'s change from the start of training, ‖w - w₀‖ / ‖w₀‖ '
                  f'(and of its norm): {shown}', logger='current')

    @staticmethod
    def _model(runner: Runner) -> nn.Module:
        """The trained model, unwrapped from DDP and the like."""
        return unwrap(runner.model)
