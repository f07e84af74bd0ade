"""``WeightDriftHook``: after every epoch, how far each block's weights have moved from where training started."""
from typing import Dict, List

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ..recipe_check import WeightChange, weight_changes


@HOOKS.register_module()
class WeightDriftHook(Hook):
    """Log ``‖w - w₀‖ / ‖w₀‖`` per block (and embedding, norm, GLCA) after each epoch; ``history`` keeps it and ``‖w‖ / ‖w₀‖``.

    Fine-tuning moves pretrained weights little (a few percent over a run); a block whose weights
    move by tens of percent within the first epochs is being overwritten (a too-high lr, or a
    coupled weight decay that shrinks them, ``dcal_plugin.recipe_check``). ``w₀`` are the weights
    at the start of ``runner.train()``: after ``init_weights`` (the pretrained checkpoint), or the
    resumed ones after a resume (``reference`` holds them, by parameter name).
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self.history: List[Dict[str, WeightChange]] = []

    def before_train(self, runner) -> None:
        """Keep a copy of the weights training starts from."""
        self.reference = {name: parameter.detach().clone() for name, parameter in self._model(runner).named_parameters()}

    def after_train_epoch(self, runner) -> None:
        """Compute, log and keep each block's relative change."""
        changes = weight_changes(self.reference, self._model(runner))
        self.history.append(changes)
        shown = ', '.join(f'{group.split("vit.")[-1].split("dcal.")[-1]} {100 * change.drift:.2f}%'
                          for group, change in changes.items())
        print_log(f'weight drift from the start of training after epoch {runner.epoch + 1}: {shown}', logger='current')

    @staticmethod
    def _model(runner):
        """The trained model, unwrapped from DDP and the like."""
        return runner.model.module if is_model_wrapper(runner.model) else runner.model
