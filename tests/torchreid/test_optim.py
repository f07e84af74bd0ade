"""The optimizer keeps the uncertainty weights out of weight decay; the schedule warms up linearly, then follows torchreid's."""
import math

import pytest
import torch

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import build_dcal_reid, build_optimizer, build_scheduler  # noqa: E402

from .helpers import TINY_MODEL  # noqa: E402


@pytest.mark.parametrize('optim', ['sgd', 'adamw'])
def test_every_parameter_once_and_log_vars_without_weight_decay(optim):
    model = build_dcal_reid('deit_tiny_patch16_224', 4, img_size=32, **TINY_MODEL)
    optimizer = build_optimizer(model, optim=optim, lr=0.01, weight_decay=0.05)
    groups = optimizer.param_groups
    assert [p for group in groups for p in group['params']] != []
    assert sorted(id(p) for group in groups for p in group['params']) == sorted(id(p) for p in model.parameters())
    decay_free = [p for group in groups if group['weight_decay'] == 0 for p in group['params']]
    assert decay_free == [model.loss_weighting.log_vars]
    assert all(group['weight_decay'] == 0.05 for group in groups if group['params'] != decay_free)
    assert all(group['lr'] == 0.01 for group in groups)


def test_linear_warm_up_then_cosine_per_epoch():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.008)
    scheduler = build_scheduler(optimizer, lr_scheduler='cosine', max_epoch=10, warmup_epochs=3, warmup_factor=0.01)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    warm = [0.008 * (0.01 + (1 - 0.01) * epoch / 3) for epoch in range(3)]
    cosine = [0.004 * (1 + math.cos(math.pi * epoch / 7)) for epoch in range(7)]
    assert lrs == pytest.approx(warm + cosine, rel=1e-6)


def test_no_warm_up_is_torchreids_scheduler_and_bad_values_fail():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, lr_scheduler='single_step', max_epoch=10, warmup_epochs=0, stepsize=[4])
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.step_size == 4
    with pytest.raises(ValueError, match='warmup_epochs'):
        build_scheduler(optimizer, max_epoch=5, warmup_epochs=5)
    with pytest.raises(ValueError, match='optim must be one of'):
        build_optimizer(torch.nn.Linear(2, 2), optim='adam')
