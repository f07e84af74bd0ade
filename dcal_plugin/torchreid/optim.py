"""Optimizer and learning-rate schedule for DCALReID: the paper's SGD recipe, cosine after a linear warm-up."""
from typing import Sequence

import torch
import torchreid
from torch import nn
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR

OPTIMIZERS = ('sgd', 'adamw')


def build_optimizer(model: nn.Module, optim: str = 'sgd', lr: float = 0.008, weight_decay: float = 1e-4,
                    momentum: float = 0.9, adam_beta1: float = 0.9, adam_beta2: float = 0.999) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over the model's parameters, with ``loss_weighting.log_vars`` exempt from weight decay.

    torchreid's ``build_optimizer`` decays every parameter alike; the uncertainty weights must
    not be pulled towards 0 by weight decay (``UncertaintyWeightedLoss``), so they get their own
    parameter group (same learning rate).
    """
    if optim not in OPTIMIZERS:
        raise ValueError(f'optim must be one of {OPTIMIZERS}, got {optim!r}')
    log_vars = [param for name, param in model.named_parameters() if name.endswith('loss_weighting.log_vars')]
    others = [param for name, param in model.named_parameters() if not name.endswith('loss_weighting.log_vars')]
    groups = [{'params': others}, {'params': log_vars, 'weight_decay': 0.0}]
    if optim == 'sgd':
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=(adam_beta1, adam_beta2), weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, lr_scheduler: str = 'cosine', max_epoch: int = 120,
                    warmup_epochs: int = 5, warmup_factor: float = 0.01, stepsize: Sequence[int] = (40,),
                    gamma: float = 0.1) -> LRScheduler:
    """torchreid's scheduler (stepped once per epoch) over the epochs after a linear warm-up from ``warmup_factor·lr``.

    With ``warmup_epochs=0`` this is exactly ``torchreid.optim.build_lr_scheduler``; otherwise
    that scheduler runs over ``max_epoch - warmup_epochs`` epochs after torch's ``LinearLR``.
    Both are chained by torch's ``SequentialLR``, whose state_dict torchreid's checkpoints keep.
    """
    if not 0 <= warmup_epochs < max_epoch:
        raise ValueError(f'warmup_epochs must lie in [0, max_epoch={max_epoch}), got {warmup_epochs}')
    main = torchreid.optim.build_lr_scheduler(
        optimizer, lr_scheduler=lr_scheduler, stepsize=list(stepsize), gamma=gamma, max_epoch=max_epoch - warmup_epochs)
    if warmup_epochs == 0:
        return main
    warmup = LinearLR(optimizer, start_factor=warmup_factor, end_factor=1.0, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_epochs])
