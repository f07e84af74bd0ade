"""dcal_plugin.recipe_check against loop-based formulas: merged groups, norm retention, the decay reference, weight
changes."""
import math

import pytest
import torch
from torch import nn

from dcal_plugin.recipe_check import (
    RecipeSchedule, is_block_weight, make_pretrained_like_, merge_equal_param_groups, norm_retention, weight_changes)


class TwoBlocks(nn.Module):
    """Parameters named like a timm ViT's: two blocks, an embedding and a classifier."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
        self.patch_embed = nn.Linear(3, 6)
        self.head = nn.Linear(6, 2)


def constant_schedule(optimizer, epochs=3, epoch_length=4):
    return RecipeSchedule(optimizer, step_iteration=lambda: None, step_epoch=lambda: None, epochs=epochs,
                          epoch_length=epoch_length)


def test_pretrained_like_draws_matrices_and_keeps_vectors():
    model = TwoBlocks()
    biases = [model.blocks[0].bias.detach().clone()]
    make_pretrained_like_(model, seed=3)
    assert model.blocks[0].bias.equal(biases[0])
    weights = torch.cat([p.flatten() for p in model.parameters() if p.ndim == 2])
    assert weights.std().item() == pytest.approx(0.02, rel=0.2)


@pytest.mark.parametrize('optimizer_type, options', [
    (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.05)), (torch.optim.Adam, dict(lr=1e-2, weight_decay=0.05)),
    (torch.optim.SGD, dict(lr=1e-1, momentum=0.9, weight_decay=1e-3))])
def test_merged_groups_take_the_same_steps_as_one_group_per_parameter(optimizer_type, options):
    torch.manual_seed(0)
    reference, merged = TwoBlocks(), TwoBlocks()
    merged.load_state_dict(reference.state_dict())

    def groups(model):  # one group per parameter, as mmengine's paramwise_cfg makes them; biases without decay
        return [dict(params=[p], weight_decay=0.0 if name.endswith('bias') else options['weight_decay'])
                for name, p in model.named_parameters()]

    first = optimizer_type(groups(reference), **options)
    second = merge_equal_param_groups(optimizer_type(groups(merged), **options))
    assert len(second.param_groups) == 2
    for step in range(5):
        gradients = [torch.randn_like(p) for p in reference.parameters()]
        for model, optimizer in ((reference, first), (merged, second)):
            for parameter, gradient in zip(model.parameters(), gradients):
                parameter.grad = gradient.clone()
            optimizer.step()
    for a, b in zip(reference.parameters(), merged.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_without_gradient_noise_sgd_keeps_exactly_its_weight_decay():
    """Plain SGD (no momentum) on a zero gradient: w <- (1 - lr·wd) w, which is the decay reference by definition."""
    model = TwoBlocks()
    make_pretrained_like_(model)
    schedule = constant_schedule(torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01))
    retention = norm_retention(model, schedule, gradient_std=0.0)
    assert set(retention.kept) == {'blocks.0.weight', 'blocks.1.weight'}  # block matrices only
    expected = [(1 - 0.1 * 0.01) ** (4 * epoch) for epoch in (1, 2, 3)]
    for name in retention.kept:
        assert retention.kept[name] == pytest.approx(expected, rel=1e-5)
        assert retention.decay_only[name] == pytest.approx(expected, rel=1e-12)
    assert retention.weakest_beyond_decay() == pytest.approx([1.0] * 3, rel=1e-5)


def test_the_decay_reference_of_heavy_ball_sgd_counts_the_momentum():
    """With momentum m, a constant decay term accumulates to 1/(1-m) of itself: the steady-state shrink."""
    model = TwoBlocks()
    make_pretrained_like_(model)
    retention = norm_retention(model, constant_schedule(
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3), epochs=1, epoch_length=200),
        gradient_std=0.0)
    assert retention.decay_only['blocks.0.weight'][0] == pytest.approx((1 - 0.01 * 1e-3 * 10) ** 200)
    # the weight itself gets there once the momentum buffer has filled (a few dozen steps behind)
    assert retention.kept['blocks.0.weight'][0] == pytest.approx(retention.decay_only['blocks.0.weight'][0], rel=2e-3)


def test_coupled_adam_decay_shrinks_far_below_its_nominal_decay():
    """Adam normalises the decay term 0.05·w (far above the 1e-4 noise) to about lr·sign(w): |w| falls by lr a step."""
    model = TwoBlocks()
    make_pretrained_like_(model)
    start = model.blocks[0].weight.detach().clone()
    retention = norm_retention(model, constant_schedule(
        torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.05), epochs=2, epoch_length=10))
    by_lr = [(start.abs() - 1e-3 * steps).clamp(min=0).norm().item() / start.norm().item() for steps in (10, 20)]
    assert retention.kept['blocks.0.weight'] == pytest.approx(by_lr, abs=0.05)  # weights at 0 jitter by ~lr
    assert retention.weakest_beyond_decay()[-1] < 0.5


def test_stop_below_ends_the_run_after_the_first_epoch_under_the_share():
    model = TwoBlocks()
    make_pretrained_like_(model)
    schedule = constant_schedule(torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.05), epochs=50)
    retention = norm_retention(model, schedule, gradient_std=0.0, stop_below=0.9)
    assert retention.weakest()[-1] < 0.9 <= retention.weakest()[-2] and len(retention.weakest()) < 50
    assert all(parameter.grad is None for parameter in model.parameters())  # the noise buffer is let go


def test_norm_retention_refuses_a_model_without_block_weights():
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match='no block weight'):
        norm_retention(model, constant_schedule(torch.optim.SGD(model.parameters(), lr=0.1)))


def test_block_weights_by_name():
    assert is_block_weight('dcal.vit.blocks.3.attn.qkv.weight') and is_block_weight('blocks.0.mlp.fc1.weight')
    assert is_block_weight('backbone.dcal.glca_block.attn.proj.weight')
    assert not is_block_weight('dcal.vit.patch_embed.proj.weight') and not is_block_weight('head.sa_fc.weight')


def test_weight_changes_by_group_against_a_loop():
    torch.manual_seed(0)
    model = TwoBlocks()
    reference = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5).add_(torch.randn_like(p) * 0.1)
    changes = weight_changes(reference, model)
    assert set(changes) == {'blocks.0', 'blocks.1', 'patch_embed', 'head'}
    names = [name for name in reference if name.startswith('blocks.1.')]
    moved = math.sqrt(sum((dict(model.named_parameters())[n] - reference[n]).square().sum().item() for n in names))
    start = math.sqrt(sum(reference[n].square().sum().item() for n in names))
    now = math.sqrt(sum(dict(model.named_parameters())[n].square().sum().item() for n in names))
    assert changes['blocks.1'].drift == pytest.approx(moved / start)
    assert changes['blocks.1'].norm == pytest.approx(now / start)
    partial = {name: value for name, value in reference.items() if not name.startswith('head')}
    assert 'head' not in weight_changes(partial, model)  # a new classifier has no reference
