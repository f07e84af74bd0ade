"""Uncertainty-weighted multi-task loss (Kendall, Gal & Cipolla, CVPR 2018), as DCAL uses it (METHOD §5)."""
import math
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

LOG_VAR_BOUNDS = (-2.0, 2.0)  # the default box of the log-variances [ours]: weights in [0.135, 7.39]


class UncertaintyWeightedLoss(nn.Module):
    """``L = ½ · Σ_i (exp(-w_i)·L_i + w_i)`` over the branch losses (SA, GLCA, PWCA), ``w`` learnable, initialised to 0.

    Guard against run-away weights [ours]: the unconstrained optimum of ``w_i`` is ``log L_i``, so
    as a branch's training loss approaches 0 its weight ``exp(-w_i)`` grows without bound and that
    branch takes over the gradient; one replication's accuracy collapsed this way (61% → 10%,
    METHOD §10). Here ``w`` is kept in the box ``log_var_bounds`` by projection: before every use
    the parameter is clamped in place (projected gradient descent), so each weight stays within
    ``[exp(-hi), exp(-lo)]`` and the ratio between two branches' weights within ``exp(hi - lo)``,
    while a gradient pointing back inside the box still moves ``w`` at once. Pass
    ``log_var_bounds=None`` for the unconstrained original. Keep ``log_vars`` out of weight decay.

    Args:
        num_tasks (int): number of losses combined. Defaults to 3.
        log_var_bounds (tuple[float, float] | None): closed interval for every ``w_i`` [ours].
            Defaults to ``LOG_VAR_BOUNDS``, ``(-2.0, 2.0)``: weights in ``[0.135, 7.39]``.
    """

    def __init__(self, num_tasks: int = 3, log_var_bounds: Optional[Tuple[float, float]] = LOG_VAR_BOUNDS) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f'num_tasks must be >= 1, got {num_tasks}')
        if log_var_bounds is not None and not log_var_bounds[0] <= 0.0 <= log_var_bounds[1]:
            raise ValueError(f'log_var_bounds must contain the initial value 0, got {log_var_bounds}')
        self.num_tasks = num_tasks
        self.log_var_bounds = log_var_bounds
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Sequence[Optional[Tensor]]) -> Tensor:
        """Weighted sum (scalar) of ``num_tasks`` scalar losses (None: an absent task, see :meth:`terms`)."""
        return self.terms(losses).sum()

    def terms(self, losses: Sequence[Optional[Tensor]]) -> Tensor:
        """The terms ``½·(exp(-w_i)·L_i + w_i)`` ``[T]`` of the ``T`` losses given; their sum is the loss.

        ``losses`` has one entry per task; None marks a task the model does not have (a branch
        switched off for an ablation): it adds no term and its ``w_i`` gets no gradient.
        """
        if len(losses) != self.num_tasks:
            raise ValueError(f'expected {self.num_tasks} losses, got {len(losses)}')
        present = [index for index, loss in enumerate(losses) if loss is not None]
        if not present:
            raise ValueError('every loss is None: at least one task must be present')
        self._project()
        stacked = torch.stack([losses[index].reshape(()) for index in present])
        log_vars = self.log_vars[present].to(stacked.dtype)
        return 0.5 * (torch.exp(-log_vars) * stacked + log_vars)

    @property
    def weights(self) -> Tensor:
        """The current weights ``exp(-w)`` ``[num_tasks]``, detached, for logging."""
        self._project()
        return torch.exp(-self.log_vars.detach())

    def _project(self) -> None:
        """Clamp ``log_vars`` into ``log_var_bounds`` in place (no-op when unbounded).

        Works on ``.data`` so that a graph recorded before the call (e.g. a loss not yet
        back-propagated when ``weights`` is logged) is not invalidated; values inside the box are
        left bit-identical.
        """
        if self.log_var_bounds is not None:
            self.log_vars.data.clamp_(*self.log_var_bounds)

    def extra_repr(self) -> str:
        return f'num_tasks={self.num_tasks}, log_var_bounds={self.log_var_bounds}'


class NonFiniteLossError(RuntimeError):
    """A training step produced a branch loss or an uncertainty weight that is NaN or infinite."""


def check_finite(values: Mapping[str, Optional[Union[Tensor, float]]], step: str) -> None:
    """Raise :class:`NonFiniteLossError` naming ``step`` and the first of ``values`` (scalars, None skipped) not
    finite."""
    for name, value in values.items():
        if isinstance(value, Tensor):
            value = value.detach()
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteLossError(diverged(step, f'{name} is {float(value)}'))


def diverged(step: str, what: str) -> str:
    """The message of a run stopped at ``step`` because ``what`` (e.g. ``'loss_sa is nan'``) is not finite."""
    return (f'training stopped at {step}: {what}. The run diverged (try a lower learning rate, gradient clipping, or '
            'check the inputs); no checkpoint of this state was written, so the latest one holds finite weights')
