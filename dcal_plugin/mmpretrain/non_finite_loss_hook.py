"""``NonFiniteLossHook``: stop training at the first loss, weight or optimizer state that is NaN or infinite."""
from typing import Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ..core import BRANCHES, check_finite, check_finite_state
from .unwrap import unwrap

LOGGED_KINDS = {'loss': 'weighted loss', 'ce': 'loss', 'weight': 'uncertainty weight'}  # DCALClsHead's log keys


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise ``NonFiniteLossError`` naming the iteration and what diverged, before any checkpoint of it is written.

    After each iteration (priority ``VERY_HIGH``: before any checkpoint hook) it reads the losses
    ``DCALClsHead`` returns (``loss_*``, ``ce_*``, ``weight_*`` per branch), then the state the step
    left (:func:`~dcal_plugin.core.check_finite_state`: every weight and buffer, the uncertainty
    weights' log-variances among them, and the optimizer state); the state is checked again before
    every checkpoint, best ones included. So ``last_checkpoint`` keeps naming the last finite
    state; without the hook, mmengine trains on to the end, logging ``nan``.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Check every branch's logged losses and weight, then the state, of the iteration that just ran."""
        step = f'epoch {runner.epoch + 1}, iteration {runner.iter + 1}'
        values = {f'the {branch} branch\'s {description} ({kind}_{branch})': outputs.get(f'{kind}_{branch}')
                  for branch in BRANCHES for kind, description in LOGGED_KINDS.items()}
        check_finite(values, step)
        self._check_state(runner, step)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to write a checkpoint of a state that is not finite."""
        self._check_state(runner, f'the checkpoint after iteration {runner.iter}')

    @staticmethod
    def _check_state(runner, step: str) -> None:
        optim_wrapper = getattr(runner, 'optim_wrapper', None)
        check_finite_state(unwrap(runner.model), getattr(optim_wrapper, 'optimizer', None), step)
