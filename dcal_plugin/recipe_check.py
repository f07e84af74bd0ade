"""Does a training recipe keep pretrained weights? Its optimizer and schedule, run over noise gradients.

Fine-tuning moves pretrained weights little: their true gradients are small. A recipe whose
optimizer shrinks weights whatever the gradient (torch's ``Adam(weight_decay=...)``, coupled L2
under Adam's normalisation: about lr per step) erases them within a few epochs, and nothing
trained from scratch shows it. This runs a recipe's own optimizer and learning-rate schedule for
its whole length on weights drawn like a pretrained ViT's, with a small Gaussian noise as every
gradient, and records each weight's norm relative to its start after every epoch. The toolbox
adapters build the optimizer and schedule from their configs
(``dcal_plugin.mmpretrain.recipe_schedule``, ``dcal_plugin.torchreid.recipe_schedule``).
"""
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

PRETRAINED_STD = 0.02  # a ViT's weight matrices: timm's trunc-normal init, about the spread of pretrained ViT weights
GRADIENT_STD = 1e-4  # the noise standing in for a fine-tuning gradient
KEPT_NORM = 0.95  # a recipe keeps pretrained weights when every block weight matrix keeps this share of its norm
# The stand-in model whose parameters a recipe's optimizer groups by name: timm's DeiT layout at width 12 and 32x32
# with the config's depth, frozen stages and DCAL options (a recipe does not depend on the model's width)
STAND_IN_VIT = dict(model_name='deit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=12, num_heads=3)
STAND_IN_CLASSES = 10


@dataclass
class RecipeSchedule:
    """A recipe's optimizer and how its schedule advances: after every iteration, after every epoch."""

    optimizer: torch.optim.Optimizer
    step_iteration: Callable[[], None]
    step_epoch: Callable[[], None]
    epochs: int
    epoch_length: int


def make_pretrained_like_(model: nn.Module, seed: int = 0, std: float = PRETRAINED_STD) -> None:
    """Draw every weight matrix (``ndim >= 2``) from N(0, std²) in place; vectors (norms, biases) keep their init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def merge_equal_param_groups(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer class over the same parameters, with groups of equal hyperparameters merged.

    Each parameter's update depends only on its own group's hyperparameters, so the merged
    optimizer computes the same steps; mmengine's ``paramwise_cfg`` makes a group per
    parameter, whose per-group overhead would dominate a long simulated schedule. Groups run
    torch's fused implementation (one kernel per group), the same arithmetic. Build the
    schedule's schedulers on the merged optimizer.
    """
    merged: Dict[tuple, dict] = {}
    for group in optimizer.param_groups:
        options = {key: value for key, value in group.items() if key != 'params'}
        if 'fused' in options:
            options.update(fused=True, foreach=None)
        key = tuple(sorted((name, repr(value)) for name, value in options.items()))
        merged.setdefault(key, dict(options, params=[]))['params'].extend(group['params'])
    return type(optimizer)(list(merged.values()))


@dataclass
class NormRetention:
    """Per tracked weight, after every epoch: ``‖w‖ / ‖w₀‖`` (``kept``) and what the nominal weight decay alone leaves
    (``decay_only``)."""

    kept: Dict[str, List[float]]
    decay_only: Dict[str, List[float]]

    def weakest(self) -> List[float]:
        """Per epoch, the smallest ``kept`` over the tracked weights ``[epochs]``."""
        return [min(values) for values in zip(*self.kept.values())]

    def weakest_beyond_decay(self) -> List[float]:
        """Per epoch, the smallest ``kept / decay_only``: what the optimizer took beyond its nominal weight decay."""
        ratios = [[kept / decay for kept, decay in zip(self.kept[name], self.decay_only[name])] for name in self.kept]
        return [min(values) for values in zip(*ratios)]


def is_block_weight(name: str) -> bool:
    """A parameter of a transformer block (SA's ``blocks.N``, GLCA's ``glca_block``; not a hybrid CNN's), by name."""
    return 'patch_embed.' not in name and re.search(r'(^|\.)(blocks\.\d+|glca_block)\.', name) is not None


def norm_retention(model: nn.Module, schedule: RecipeSchedule, gradient_std: float = GRADIENT_STD,
                   seed: int = 0, stop_below: Optional[float] = None) -> NormRetention:
    """Run ``schedule`` with N(0, gradient_std²) gradients, tracking every block weight matrix after each epoch.

    ``decay_only`` is ``Π (1 - lr·wd·a)`` over the steps with the group's lr and weight decay,
    ``a = 1 / (1 - momentum)`` for SGD with momentum (the buffer accumulates the decay term) and 1
    otherwise: what a weight keeps under the nominal decay when its gradient holds it (a gradient of
    ``wd·a·w`` suffices). torch's coupled ``Adam(weight_decay)`` falls far below it, its decay term
    being normalised. ``stop_below``: stop after the first epoch in which a tracked weight keeps
    less than that share of its norm. Runs on one thread: the tensors are small.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _norm_retention(model, schedule, gradient_std, seed, stop_below)
    finally:
        torch.set_num_threads(threads)


def _norm_retention(model: nn.Module, schedule: RecipeSchedule, gradient_std: float, seed: int,
                    stop_below: Optional[float]) -> NormRetention:
    """:func:`norm_retention` on the current threads."""
    groups = schedule.optimizer.param_groups
    group_of = {id(parameter): index for index, group in enumerate(groups) for parameter in group['params']
                if parameter.requires_grad}  # frozen ones get no gradient, as in training
    tracked = {name: parameter for name, parameter in model.named_parameters()
               if id(parameter) in group_of and parameter.ndim >= 2 and is_block_weight(name)}
    if not tracked:
        raise ValueError('the optimizer updates no block weight matrix of the model')
    parameters = [parameter for group in groups for parameter in group['params'] if parameter.requires_grad]
    gradients = torch.empty(sum(parameter.numel() for parameter in parameters))
    offset = 0
    for parameter in parameters:  # every gradient is a view of one buffer: one noise draw per step
        parameter.grad = gradients[offset:offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
    start = {name: parameter.detach().norm().item() for name, parameter in tracked.items()}
    retention = NormRetention({name: [] for name in tracked}, {name: [] for name in tracked})
    log_decay = [0.0] * len(groups)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(schedule.epochs):
        for _ in range(schedule.epoch_length):
            gradients.normal_(0.0, gradient_std, generator=generator)
            schedule.optimizer.step()
            for index, group in enumerate(groups):
                log_decay[index] += math.log1p(-group['lr'] * group['weight_decay'] * _decay_amplification(group))
            schedule.step_iteration()
        schedule.step_epoch()
        for name, parameter in tracked.items():
            retention.kept[name].append(parameter.detach().norm().item() / start[name])
            retention.decay_only[name].append(math.exp(log_decay[group_of[id(parameter)]]))
        if stop_below is not None and retention.weakest()[-1] < stop_below:
            break
    for parameter in parameters:
        parameter.grad = None
    return retention


def _decay_amplification(group: dict) -> float:
    """How many times a step's decay term acts: ``1 / (1 - momentum)`` for heavy-ball momentum, else 1."""
    momentum = group.get('momentum', 0.0)
    return 1.0 / (1.0 - momentum) if momentum and not group.get('nesterov', False) else 1.0


@dataclass(frozen=True)
class WeightChange:
    """How a group of weights moved from its start: ``‖w - w₀‖ / ‖w₀‖`` (``drift``) and ``‖w‖ / ‖w₀‖`` (``norm``)."""

    drift: float
    norm: float


def weight_changes(reference: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, WeightChange]:
    """Each group of ``model``'s weights (a block, a module, a tensor: :func:`_weight_group`) against ``reference``.

    ``reference``: the starting weights by ``model``'s own parameter names (``named_parameters``);
    parameters missing from it, or groups that start at zero, are left out.
    """
    sums: Dict[str, List[float]] = {}
    for name, parameter in model.named_parameters():
        if name in reference:
            start = reference[name].to(parameter.device, torch.float32)
            now = parameter.detach().float()
            totals = sums.setdefault(_weight_group(name), [0.0, 0.0, 0.0])
            totals[0] += (now - start).square().sum().item()
            totals[1] += now.square().sum().item()
            totals[2] += start.square().sum().item()
    return {group: WeightChange(drift=(moved / start) ** 0.5, norm=(now / start) ** 0.5)
            for group, (moved, now, start) in sums.items() if start > 0}


def _weight_group(name: str) -> str:
    """A parameter's group: its transformer block (``vit.blocks.3``, ``glca_block``), else its module or own name.

    'dcal.vit.blocks.3.attn.qkv.weight' -> 'dcal.vit.blocks.3'; 'dcal.glca_block.mlp.fc1.bias' -> 'dcal.glca_block';
    'dcal.vit.patch_embed.proj.weight' -> 'dcal.vit.patch_embed.proj'; 'dcal.vit.cls_token' -> 'dcal.vit.cls_token'.
    """
    block = re.search(r'^(.*?(^|\.)(blocks\.\d+|glca_block))\.', name)
    if block and 'patch_embed.' not in name:
        return block.group(1)
    parts = name.split('.')
    return '.'.join(parts[:-1]) if parts[-1] in ('weight', 'bias') else name
