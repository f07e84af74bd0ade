"""``NonFiniteLossHook``: stop training at the first branch loss or uncertainty weight that is NaN or infinite."""
from typing import Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ..core import BRANCHES, check_finite

LOGGED_KINDS = {'loss': 'weighted loss', 'ce': 'loss', 'weight': 'uncertainty weight'}  # DCALClsHead's log keys


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise :class:`~dcal_plugin.core.NonFiniteLossError` naming the iteration and the branch when a logged value diverges.

    It reads the losses ``DCALClsHead`` returns (``loss_*``, ``ce_*``, ``weight_*`` per branch)
    right after each iteration, before any checkpoint hook (priority ``VERY_HIGH``), so that no
    checkpoint of the diverged weights is written and ``last_checkpoint`` keeps naming the last
    finite one; without it, mmengine trains on to the end, logging ``nan``.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Check every branch's logged losses and weight of the iteration that just ran."""
        values = {f'the {branch} branch\'s {description} ({kind}_{branch})': outputs.get(f'{kind}_{branch}')
                  for branch in BRANCHES for kind, description in LOGGED_KINDS.items()}
        check_finite(values, f'epoch {runner.epoch + 1}, iteration {runner.iter + 1}')
