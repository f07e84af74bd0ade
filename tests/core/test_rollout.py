import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dcal_plugin.core import class_token_rollout, num_local_queries, select_local_queries

from .reference import batched_rollout_full, rollout_full


def random_maps(batch=2, heads=3, tokens=7, blocks=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, tokens, generator=generator).mul(2).softmax(-1) for _ in range(blocks)]


def test_rollout_hand_computed_three_tokens():
    # One head, two blocks; with residual 0.5: S̄ = 0.5·A + 0.5·I.
    a1 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    a2 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]])
    s1 = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    s2 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.25, 0.75]])
    torch.testing.assert_close(rollout_full([a1, a2]), (s2 @ s1).double())  # the reference, checked by hand
    # Class row: [0.5, 0.5, 0] @ s1 = [0.625, 0.375, 0]
    torch.testing.assert_close(class_token_rollout([a1[None, None], a2[None, None]])[0], torch.tensor([0.375, 0.0]))


@pytest.mark.parametrize('residual_weight', [0.5, 0.2])
def test_class_token_rollout_is_row_zero_of_full_rollout(residual_weight):
    maps = random_maps(tokens=9, blocks=5, seed=3)
    full = batched_rollout_full(maps, residual_weight)
    torch.testing.assert_close(class_token_rollout(maps, residual_weight), full[:, 0, 1:].float(), rtol=1e-5, atol=1e-7)


def test_class_token_rollout_accepts_head_averaged_maps_and_renormalises_rows():
    maps = random_maps(seed=5)
    averaged = [m.mean(1) for m in maps]
    torch.testing.assert_close(class_token_rollout(averaged), class_token_rollout(maps))
    scaled = [m * 3.0 for m in averaged]  # rows no longer sum to 1: normalisation must undo the scale
    want = batched_rollout_full(scaled)[:, 0, 1:].float()
    torch.testing.assert_close(class_token_rollout(scaled), want, rtol=1e-5, atol=1e-7)


def test_class_token_rollout_of_softmax_maps_needs_no_row_sums():
    maps = random_maps(tokens=9, blocks=4, seed=11)
    torch.testing.assert_close(class_token_rollout(maps, 0.3, rows_sum_to_one=True), class_token_rollout(maps, 0.3))
    # on maps whose rows do not sum to 1 the flag shows: the chain then skips the renormalisation
    scaled = [m.mean(1) * 3.0 for m in maps]
    for b in range(2):
        last = 0.7 * scaled[-1][b, 0].double()
        last[0] += 0.3
        row = last / last.sum()
        for attention in reversed(scaled[:-1]):
            row = row @ (0.7 * attention[b].double() + 0.3 * torch.eye(9, dtype=torch.float64))
        got = class_token_rollout(scaled, 0.3, rows_sum_to_one=True)[b]
        torch.testing.assert_close(got.double(), row[1:], rtol=1e-5, atol=1e-7)


def test_class_token_rollout_is_a_vector_matrix_chain_without_gradient():
    maps = [m.requires_grad_() for m in random_maps(batch=2, heads=1, tokens=50, blocks=6)]
    with FlopCounterMode(display=False) as counter:
        scores = class_token_rollout(maps)
    assert not scores.requires_grad
    # one [B,1,N]x[B,N,N] product per block but the last (whose class row is the start): 2·B·N² each, never N³
    assert counter.get_total_flops() == 5 * 2 * 2 * 50 * 50


@pytest.mark.parametrize('head_averaged', [False, True])
def test_class_token_rollout_needs_only_the_class_row_of_the_last_map(head_averaged):
    maps = random_maps(tokens=9, blocks=4, seed=7)
    maps = [m.mean(1) for m in maps] if head_averaged else maps
    class_row = maps[-1][..., :1, :]
    torch.testing.assert_close(class_token_rollout(maps[:-1] + [class_row]), class_token_rollout(maps))
    torch.testing.assert_close(class_token_rollout([class_row]), batched_rollout_full(maps[-1:])[:, 0, 1:].float())
    with pytest.raises(ValueError, match=r'\[B, H, N, N\]'):  # only the last block may be a class row
        class_token_rollout([class_row] + maps[1:])


def test_select_local_queries_matches_argsort():
    scores = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    index = select_local_queries(scores, 0.1)
    assert index.shape == (3, 4) and index.dtype == torch.long
    for b in range(3):
        assert index[b].tolist() == sorted(range(40), key=lambda p: -scores[b, p].item())[:4]


@pytest.mark.parametrize('patches,ratio,count',
                         [(196, 0.1, 20), (784, 0.1, 78), (128, 0.3, 38), (5, 0.01, 1), (9, 1.0, 9)])
def test_number_of_local_queries(patches, ratio, count):
    assert num_local_queries(patches, ratio) == count
    assert select_local_queries(torch.randn(1, patches), ratio).shape == (1, count)


@pytest.mark.parametrize('ratio', [0.0, -0.1, 1.5])
def test_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r'ratio must lie in \(0, 1\]'):
        select_local_queries(torch.randn(1, 10), ratio)


def test_rollout_rejects_bad_maps():
    with pytest.raises(ValueError, match='^attention rollout needs at least one attention map$'):
        class_token_rollout([])
    with pytest.raises(ValueError, match='differ in shape'):
        class_token_rollout([torch.rand(1, 2, 5, 5), torch.rand(1, 2, 6, 6)])
    with pytest.raises(ValueError, match='differ in shape'):
        class_token_rollout([torch.rand(1, 2, 5, 5), torch.rand(1, 2, 1, 6)])
    with pytest.raises(ValueError, match=r'\[B, H, N, N\]'):
        class_token_rollout([torch.rand(1, 2, 5, 4), torch.rand(1, 2, 5, 5)])
    with pytest.raises(ValueError, match=r'\[B, H, N, N\]'):
        class_token_rollout([torch.tensor(1.0)])
