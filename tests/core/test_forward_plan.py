"""``ForwardPlan`` and ``DCALViT.plan``: what a forward call runs, in each mode and option."""
import pytest
import torch

from dcal_plugin.core import DCALViT
from dcal_plugin.core.attention import MapRows
from dcal_plugin.core.forward_plan import ForwardPlan

from ..conftest import make_tiny_vit


def test_map_rows_ask_whole_maps_before_the_last_rollout_block_and_its_class_row_there():
    plan = ForwardPlan(glca_block=2, rollout_blocks=3)
    assert [plan.map_rows(index) for index in range(4)] == [MapRows.ALL, MapRows.ALL, MapRows.CLASS_TOKEN, None]
    assert [ForwardPlan().map_rows(index) for index in range(2)] == [None, None]


def test_stack_and_split_keep_sa_rows_first():
    tokens = torch.randn(3, 5, 4)
    alone = ForwardPlan()
    assert alone.stack(tokens) is tokens and alone.split(tokens) == (tokens, None)
    paired = ForwardPlan(partner=torch.tensor([1, 2, 0]))
    stream = paired.stack(tokens)
    assert stream.shape == (6, 5, 4)
    sa, pwca = paired.split(stream + torch.arange(6.0).view(6, 1, 1))
    torch.testing.assert_close(sa, tokens + torch.arange(3.0).view(3, 1, 1))
    torch.testing.assert_close(pwca, tokens + torch.arange(3.0, 6.0).view(3, 1, 1))


@pytest.mark.parametrize('options,train,want', [
    (dict(), True, dict(pwca=True, glca_block=2, rollout_blocks=3)),
    (dict(), False, dict(pwca=False, glca_block=2, rollout_blocks=3)),
    (dict(glca_block_index=1), False, dict(pwca=False, glca_block=1, rollout_blocks=2)),
    (dict(query_selection='random'), True, dict(pwca=True, glca_block=2, rollout_blocks=0)),
    (dict(sa_only_inference=True), False, dict(pwca=False, glca_block=None, rollout_blocks=0)),
    (dict(sa_only_inference=True), True, dict(pwca=True, glca_block=2, rollout_blocks=3)),
    (dict(use_glca=False), True, dict(pwca=True, glca_block=None, rollout_blocks=0)),
    (dict(use_pwca=False), True, dict(pwca=False, glca_block=2, rollout_blocks=3)),
    (dict(use_glca=False, use_pwca=False), True, dict(pwca=False, glca_block=None, rollout_blocks=0)),
])
def test_plan_follows_mode_and_options(options, train, want):
    model = DCALViT(make_tiny_vit(), **options).train(train)
    plan = model.plan(4, torch.tensor([1, 0, 3, 2]) if want['pwca'] else None)
    assert (plan.partner is not None) == want['pwca']
    assert (plan.glca_block, plan.rollout_blocks) == (want['glca_block'], want['rollout_blocks'])
    assert plan.is_plain_vit == (not want['pwca'] and want['glca_block'] is None)


def test_option_defaults_are_the_arguments_after_vit():
    assert DCALViT.option_defaults() == dict(
        local_query_ratio=0.1, glca_block_index=-1, residual_weight=0.5, sa_only_inference=False, use_glca=True,
        use_pwca=True, query_selection='rollout', pwca_partner_gradient=True, grad_checkpointing=False)


@pytest.mark.parametrize('train', [False, True])
def test_the_models_softmax_attribute_computes_the_whole_maps_on_cpu_without_autograd_only(train):
    """A kernel set on the model (as benchmarks do) computes each whole map of an eval forward on CPU; None, or
    training, defers them all (the rollout computes them from queries and keys, as off CPU)."""
    model = DCALViT(make_tiny_vit()).train(train)
    default, query_rows = model.softmax_with_head_mean, []

    def counting_softmax(q, *args, **kwargs):
        query_rows.append(q.shape[2])
        return default(q, *args, **kwargs)

    shared = None  # the first call's output, which the second (no shared softmax) must select alike
    for softmax, want in ((counting_softmax, [] if train else [17] * (len(model.vit.blocks) - 1)), (None, [])):
        model.softmax_with_head_mean = softmax
        query_rows.clear()
        with torch.set_grad_enabled(train):
            out = model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
        # GLCA sits beside the last block: its class row is never a whole map
        assert query_rows == want
        if softmax is None:
            assert torch.equal(out.local_query_index, shared.local_query_index)
        shared = out
