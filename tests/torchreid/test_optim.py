"""The optimizer trains biases at lr ×2 (TransReID) and the uncertainty weights without weight decay; the schedule warms
up linearly, then follows torchreid's."""
import math

import pytest
import torch

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import MODEL_NAMES, build_dcal_reid, build_optimizer, build_scheduler  # noqa: E402
from dcal_plugin.torchreid.optim import is_bias  # noqa: E402

from .helpers import TINY_MODEL  # noqa: E402


@pytest.mark.parametrize('optim', ['sgd', 'adamw'])
def test_biases_at_twice_the_lr_with_their_own_decay_and_log_vars_without_decay(optim):
    model = build_dcal_reid('deit_tiny_patch16_224', 4, img_size=32, **TINY_MODEL)
    optimizer = build_optimizer(model, optim=optim, lr=0.01, weight_decay=0.05, weight_decay_bias=1e-4)
    settings = {id(p): (group['lr'], group['weight_decay']) for group in optimizer.param_groups
                for p in group['params']}
    assert sum(len(group['params']) for group in optimizer.param_groups) == len(settings)  # each parameter once
    names = dict(model.named_parameters())
    assert set(settings) == {id(p) for p in names.values()}
    want = {id(p): (0.01, 0.0) if name == 'loss_weighting.log_vars' else
            (0.02, 1e-4) if 'bias' in name else (0.01, 0.05)  # TransReID's rule: a name containing "bias"
            for name, p in names.items()}
    assert settings == want and 0 < sum(value == (0.02, 1e-4) for value in want.values()) < len(want)


def test_a_bias_takes_twice_the_sgd_step_of_a_weight_with_its_own_decay():
    layer = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(layer, lr=0.1, weight_decay=0.01, momentum=0.0, bias_lr_factor=2.0,
                                weight_decay_bias=0.5)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    torch.testing.assert_close(layer.weight, weight - 0.1 * (4.0 + 0.01 * weight))  # d(sum)/dW = 4 per entry
    torch.testing.assert_close(layer.bias, bias - 0.2 * (4.0 + 0.5 * bias))


@pytest.mark.parametrize('name', sorted(MODEL_NAMES))
def test_biases_are_transreids_on_every_shipped_backbone(name):
    swin = 'swin' in name
    model = build_dcal_reid(MODEL_NAMES[name], 3, img_size=28 if 'dinov2' in name else 32,
                            **(dict(depths=(1, 1, 1, 1), use_glca=False) if swin else dict(depth=1)))
    names = [param_name for param_name, _ in model.named_parameters()]
    tables = [n for n in names if n.endswith('relative_position_bias_table')]  # Swin's: attention terms, no biases
    assert [n for n in names if is_bias(n)] == [n for n in names if 'bias' in n and n not in tables] != []
    assert bool(tables) == swin


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
