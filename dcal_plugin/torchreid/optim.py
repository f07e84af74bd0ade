"""Optimizer and learning-rate schedule for DCALReID: TransReID's SGD (biases at lr ×2), cosine after linear warm-up."""
from typing import Sequence

import torch
import torchreid
from torch import nn
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR

OPTIMIZERS = ('sgd', 'adamw')
LOG_VARS = 'loss_weighting.log_vars'


def is_bias(name: str) -> bool:
    """Whether the parameter ``name`` (``named_parameters``) is a layer's bias: its last component is ``bias``.

    TransReID's rule is ``'bias' in name``; on the shipped backbones (ViT, DeiT, R50-ViT) both pick the
    same parameters (test), and this one does not also catch a ``*_bias_table`` or ``bias_*`` tensor.
    """
    return name.rsplit('.', 1)[-1] == 'bias'


def build_optimizer(model: nn.Module, optim: str = 'sgd', lr: float = 0.008, weight_decay: float = 1e-4,
                    momentum: float = 0.9, adam_beta1: float = 0.9, adam_beta2: float = 0.999,
                    bias_lr_factor: float = 2.0, weight_decay_bias: float = 1e-4) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW in three groups: weights; biases at ``bias_lr_factor·lr``; ``loss_weighting.log_vars``.

    TransReID's ViT baseline (``BIAS_LR_FACTOR: 2``, ``WEIGHT_DECAY_BIAS: 1e-4``) trains every bias
    (:func:`is_bias`) at twice the learning rate with its own weight decay; torchreid's
    ``build_optimizer`` treats every parameter alike. The uncertainty weights must not be pulled
    towards 0 by weight decay (``UncertaintyWeightedLoss``), so they get their own group: the base
    learning rate, no weight decay. Schedulers scale each group's own learning rate.
    """
    if optim not in OPTIMIZERS:
        raise ValueError(f'optim must be one of {OPTIMIZERS}, got {optim!r}')
    groups = {'weights': [], 'biases': [], 'log_vars': []}
    for name, param in model.named_parameters():
        kind = 'log_vars' if name.endswith(LOG_VARS) else 'biases' if is_bias(name) else 'weights'
        groups[kind].append(param)
    param_groups = [{'params': groups['weights']},
                    {'params': groups['biases'], 'lr': lr * bias_lr_factor, 'weight_decay': weight_decay_bias},
                    {'params': groups['log_vars'], 'weight_decay': 0.0}]
    if optim == 'sgd':
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(param_groups, lr=lr, betas=(adam_beta1, adam_beta2), weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, lr_scheduler: str = 'cosine', max_epoch: int = 120,
                    warmup_epochs: int = 5, warmup_factor: float = 0.01, stepsize: Sequence[int] = (40,),
                    gamma: float = 0.1) -> LRScheduler:
    """torchreid's scheduler (stepped once per epoch) over the epochs after a linear warm-up from ``warmup_factor·lr``.

    With ``warmup_epochs=0`` this is exactly ``torchreid.optim.build_lr_scheduler``; otherwise
    that scheduler runs over ``max_epoch - warmup_epochs`` epochs after torch's ``LinearLR``.
    Both are chained by torch's ``SequentialLR``, whose state_dict torchreid's checkpoints keep.
    [ours] With the defaults, epoch e (0-based) trains at ``lr·(0.01 + 0.99·e/5)`` for e < 5, then
    along torchreid's cosine over the remaining 115 epochs down to 0, as METHOD §7 states the
    warm-up. TransReID's timm ``CosineLRScheduler`` (``warmup_lr_init = 0.01·lr``, ``lr_min =
    0.002·lr``), stepped with 1-based epochs, trains its first epoch at 0.208·lr and runs its
    cosine over all 120 epochs from there to 0.002·lr: the same shape, shifted by one epoch.
    """
    if not 0 <= warmup_epochs < max_epoch:
        raise ValueError(f'warmup_epochs must lie in [0, max_epoch={max_epoch}), got {warmup_epochs}')
    main = torchreid.optim.build_lr_scheduler(
        optimizer, lr_scheduler=lr_scheduler, stepsize=list(stepsize), gamma=gamma, max_epoch=max_epoch - warmup_epochs)
    if warmup_epochs == 0:
        return main
    warmup = LinearLR(optimizer, start_factor=warmup_factor, end_factor=1.0, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_epochs])
