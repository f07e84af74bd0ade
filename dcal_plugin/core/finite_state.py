"""The training state a checkpoint would hold, checked finite: weights, buffers (the loss weights too) and optimizer
state."""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .losses import NonFiniteLossError, diverged

# A weight beyond it squares to inf in float32 (|w| > 1.8e19): no float32 forward can use it.
WEIGHT_LIMIT = float(torch.finfo(torch.float32).max) ** 0.5
STATE_LIMIT = float('inf')  # optimizer state (e.g. Adam's squared gradients) only has to be finite

Item = Tuple[str, Tensor, float]  # (what it is, the tensor, the largest magnitude allowed)


class NonFiniteStateError(NonFiniteLossError):
    """A training step left a weight, buffer or optimizer state NaN, infinite, or beyond :data:`WEIGHT_LIMIT`."""


def check_finite_state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], step: str) -> None:
    """Raise :class:`NonFiniteStateError` naming ``step`` and the first tensor of the state that is not finite.

    Checked: every floating-point parameter and buffer of ``model`` (NaN, inf, or ``|w| >``
    :data:`WEIGHT_LIMIT`) and every floating-point tensor of ``optimizer.state`` (NaN or inf).
    One max-norm per (device, dtype) group and one read to the host.
    """
    items = state_items(model, optimizer)
    excess = _excess(items)
    if not excess.le(1).all():  # NaN compares False
        first = int(torch.nonzero(~excess.le(1))[0])
        name, tensor, _ = items[first]
        if torch.isnan(tensor).any():
            what = 'NaN'
        else:
            largest = float(tensor.detach().abs().max())
            what = 'inf' if largest == float('inf') else (
                f'values of magnitude {largest:.3g} (beyond {WEIGHT_LIMIT:.2g}, whose square overflows float32)')
        raise NonFiniteStateError(diverged(step, f'{name} holds {what}'))


def state_items(model: nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> List[Item]:
    """``(name, tensor, limit)`` for each non-empty floating-point weight, buffer and optimizer state tensor."""
    items = [(f'{kind} {name}', tensor, WEIGHT_LIMIT) for kind, named in (('parameter', model.named_parameters()),
                                                                      ('buffer', model.named_buffers()))
             for name, tensor in named]
    if optimizer is not None:
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        for group in optimizer.param_groups:
            for parameter in group['params']:
                owner = names.get(id(parameter), 'a parameter outside the model')
                items.extend((f'optimizer state {key!r} of {owner}', value, STATE_LIMIT)
                             for key, value in optimizer.state.get(parameter, {}).items() if isinstance(value, Tensor))
    return [item for item in items if item[1].is_floating_point() and item[1].numel()]


def _excess(items: List[Item]) -> Tensor:
    """``max |tensor| / limit`` per item ``[len(items)]`` float32 on the CPU: NaN where a tensor holds NaN."""
    groups: Dict[Tuple[torch.device, torch.dtype], List[int]] = {}
    for index, (_, tensor, _) in enumerate(items):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    excess = torch.zeros(len(items))
    for indices in groups.values():
        norms = torch._foreach_norm([items[index][1].detach() for index in indices], float('inf'))
        limits = torch.tensor([items[index][2] for index in indices], device=norms[0].device)
        excess[indices] = (torch.stack(norms).float() / limits).cpu()
    return excess
