import math

import pytest
import torch

from dcal_plugin.core import UncertaintyWeightedLoss


def test_loss_matches_formula_and_its_gradient():
    criterion = UncertaintyWeightedLoss(num_tasks=3)
    w = [0.3, -0.7, 1.1]
    values = [2.0, 0.5, 1.25]
    with torch.no_grad():
        criterion.log_vars.copy_(torch.tensor(w))
    losses = [torch.tensor(v, requires_grad=True) for v in values]
    total = criterion(losses)
    want_terms = [0.5 * (math.exp(-wi) * li + wi) for wi, li in zip(w, values)]
    assert criterion.terms(losses).tolist() == pytest.approx(want_terms, rel=1e-6)
    want = sum(want_terms)
    assert total.item() == pytest.approx(want, rel=1e-6)
    total.backward()
    for i, (wi, li) in enumerate(zip(w, values)):
        assert criterion.log_vars.grad[i].item() == pytest.approx(0.5 * (1 - math.exp(-wi) * li), rel=1e-5)
        assert losses[i].grad.item() == pytest.approx(0.5 * math.exp(-wi), rel=1e-6)
    torch.testing.assert_close(criterion.weights, torch.exp(-torch.tensor(w)))


def test_zero_log_variances_give_half_the_plain_sum():
    criterion = UncertaintyWeightedLoss(num_tasks=2)
    assert criterion(torch.tensor([3.0, 5.0]).unbind()).item() == pytest.approx(4.0)


def train_log_vars(bounds, steps=400):
    """SGD on the weights alone with one branch loss near 0: the unconstrained optimum w = log L runs away."""
    criterion = UncertaintyWeightedLoss(num_tasks=3, log_var_bounds=bounds)
    optimizer = torch.optim.SGD(criterion.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        criterion([torch.tensor(1e-4), torch.tensor(1.0), torch.tensor(40.0)]).backward()
        optimizer.step()
    return criterion


def test_guard_keeps_weights_bounded_where_the_unguarded_loss_runs_away():
    unguarded = train_log_vars(None)
    assert unguarded.log_vars[0].item() < -5.0  # heading to log(1e-4) = -9.2: weight > 150
    guarded = train_log_vars((-2.0, 2.0))
    weights = guarded.weights
    assert guarded.log_vars.min().item() >= -2.0 and guarded.log_vars.max().item() <= 2.0
    assert weights[0].item() == pytest.approx(math.exp(2.0), rel=1e-5)
    assert weights[1].item() == pytest.approx(1.0, abs=1e-3)  # log(1.0) = 0 is inside the box
    assert weights[2].item() == pytest.approx(math.exp(-2.0), rel=1e-5)


def test_projection_leaves_the_box_when_the_gradient_points_inward():
    criterion = UncertaintyWeightedLoss(num_tasks=1, log_var_bounds=(-2.0, 2.0))
    with torch.no_grad():
        criterion.log_vars.fill_(-5.0)  # e.g. after an optimiser step overshot
    loss = criterion([torch.tensor(3.0)])
    assert criterion.log_vars.item() == -2.0
    loss.backward()
    assert criterion.log_vars.grad.item() < 0  # descent raises w back towards log 3


def test_reading_weights_before_backward_keeps_the_graph_valid():
    criterion = UncertaintyWeightedLoss()
    loss = criterion([torch.tensor(1.0, requires_grad=True)] * 3)
    assert criterion.weights.shape == (3,)
    loss.backward()
    assert criterion.log_vars.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match='expected 3 losses, got 2'):
        UncertaintyWeightedLoss()([torch.tensor(1.0)] * 2)
    with pytest.raises(ValueError, match='contain the initial value 0'):
        UncertaintyWeightedLoss(log_var_bounds=(0.5, 2.0))
    with pytest.raises(ValueError, match='num_tasks'):
        UncertaintyWeightedLoss(num_tasks=0)


def test_bounds_may_end_at_the_initial_value_and_every_absent_loss_is_an_error():
    for bounds in ((0.0, 2.0), (-2.0, 0.0)):
        assert UncertaintyWeightedLoss(log_var_bounds=bounds).log_var_bounds == bounds
    with pytest.raises(ValueError, match='^every loss is None: at least one task must be present$'):
        UncertaintyWeightedLoss()([None, None, None])


def test_float64_losses_are_weighted_in_float64():
    criterion = UncertaintyWeightedLoss(log_var_bounds=None)
    with torch.no_grad():
        criterion.log_vars.copy_(torch.tensor([0.3, -0.7, 1.1]))
    losses = [torch.tensor(value, dtype=torch.float64) for value in (1.25, 0.5, 2.0)]
    log_vars = criterion.log_vars.detach().double()
    want = 0.5 * (torch.exp(-log_vars) * torch.stack(losses) + log_vars)
    terms = criterion.terms(losses)
    assert terms.dtype == torch.float64
    torch.testing.assert_close(terms.detach(), want, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_check_finite_names_the_step_and_the_first_value_that_is_not_finite(bad):
    from dcal_plugin.core import NonFiniteLossError, check_finite

    check_finite({'sa': torch.tensor(1.0, requires_grad=True), 'glca': None, 'pwca': 2.0}, 'iteration 3')
    with pytest.raises(NonFiniteLossError, match=rf'training stopped at iteration 3: glca is {bad}'):
        check_finite({'sa': torch.tensor(1.0), 'glca': torch.tensor(bad), 'pwca': torch.tensor(bad)}, 'iteration 3')
