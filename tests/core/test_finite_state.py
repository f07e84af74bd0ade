"""check_finite_state: weights, buffers, the loss weights and the optimizer state, named when one diverged."""
import pytest
import torch
from torch import nn

from dcal_plugin.core import NonFiniteLossError, NonFiniteStateError, UncertaintyWeightedLoss, check_finite_state
from dcal_plugin.core.finite_state import WEIGHT_LIMIT


def trained(dtype=torch.float32):
    """A model with a buffer and uncertainty weights, after one AdamW step (so the optimizer has state)."""
    torch.manual_seed(0)
    model = nn.Module()
    model.body = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(dtype)
    model.loss_weighting = UncertaintyWeightedLoss(3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    loss = model.loss_weighting([model.body(torch.randn(5, 4, dtype=dtype)).float().pow(2).mean()] * 3)
    loss.backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_a_finite_state_passes(dtype):
    model, optimizer = trained(dtype)
    check_finite_state(model, optimizer, 'epoch 1, iteration 1')
    check_finite_state(model, None, 'epoch 1, iteration 1')


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_each_kind_of_divergence_is_named(dtype):
    model, optimizer = trained(dtype)
    cases = [
        (lambda: model.body[0].weight.data.__setitem__((1, 2), 1e30),
         r"parameter body\.0\.weight holds values of magnitude 1e\+30"),
        (lambda: model.body[1].running_var.data.__setitem__(0, float('nan')), r'buffer body\.1\.running_var holds NaN'),
        (lambda: model.loss_weighting.log_vars.data.__setitem__(2, float('inf')),
         r'parameter loss_weighting\.log_vars holds inf'),
        (lambda: optimizer.state[model.body[0].bias]['exp_avg_sq'].__setitem__(0, float('nan')),
         r"optimizer state 'exp_avg_sq' of body\.0\.bias holds NaN"),
    ]
    for spoil, message in cases:
        model, optimizer = trained(dtype)
        spoil()
        with pytest.raises(NonFiniteStateError, match=r'training stopped at epoch 2, iteration 7: ' + message):
            check_finite_state(model, optimizer, 'epoch 2, iteration 7')


def test_the_weight_limit_is_where_a_square_overflows_float32():
    assert torch.isfinite(torch.tensor(WEIGHT_LIMIT * 0.999) ** 2)
    assert not torch.isfinite(torch.tensor(WEIGHT_LIMIT * 1.001) ** 2)
    model, optimizer = trained()
    model.body[0].weight.data[0, 0] = WEIGHT_LIMIT * 0.99
    check_finite_state(model, optimizer, 'x')
    model.body[0].weight.data[0, 0] = WEIGHT_LIMIT * 1.01
    with pytest.raises(NonFiniteLossError):  # a NonFiniteStateError is a NonFiniteLossError: one except clause
        check_finite_state(model, optimizer, 'x')


def test_many_large_finite_weights_pass_and_each_tensor_is_judged_by_its_largest_value():
    model, optimizer = trained()
    model.body[0].weight.data.fill_(WEIGHT_LIMIT * 0.99)  # each value usable; their 2-norm would overflow the limit
    check_finite_state(model, optimizer, 'x')


def test_parameters_without_optimizer_state_and_state_outside_the_model():
    model, optimizer = trained()
    idle = nn.Parameter(torch.ones(3))  # never stepped: no state
    outside = nn.Parameter(torch.ones(2))
    optimizer.add_param_group({'params': [idle, outside]})
    check_finite_state(model, optimizer, 'x')
    optimizer.state[outside]['exp_avg'] = torch.tensor([0.0, float('nan')])
    with pytest.raises(NonFiniteStateError,
                       match="optimizer state 'exp_avg' of a parameter outside the model holds NaN"):
        check_finite_state(model, optimizer, 'x')
