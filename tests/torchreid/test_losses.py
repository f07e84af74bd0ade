"""The soft-margin batch-hard triplet loss against its definition, written as loops."""
import math

import pytest
import torch

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import SoftMarginTripletLoss  # noqa: E402


def loop_soft_margin_triplet(features, pids):
    """mean over anchors of log(1 + exp(farthest same-id distance - nearest other-id distance)), in float64 loops."""
    rows = features.tolist()
    losses = []
    for i, anchor in enumerate(rows):
        dist = [math.sqrt(sum((a - b) ** 2 for a, b in zip(anchor, other))) for other in rows]
        positive = max(d for j, d in enumerate(dist) if pids[j] == pids[i] and j != i)
        negative = min(d for j, d in enumerate(dist) if pids[j] != pids[i])
        losses.append(math.log1p(math.exp(positive - negative)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize('seed', range(4))
def test_the_loss_is_the_mean_soft_margin_of_the_hardest_triplets(seed):
    generator = torch.Generator().manual_seed(seed)
    pids = torch.tensor([3, 3, 3, 0, 0, 7, 7, 7, 7, 1, 1])[torch.randperm(11, generator=generator)]
    features = torch.randn(11, 16, generator=generator) * (0.2 + seed)  # from overlapping to separated identities
    loss = SoftMarginTripletLoss()(features, pids)
    assert loss.item() == pytest.approx(loop_soft_margin_triplet(features, pids.tolist()), rel=1e-5)


def test_gradients_are_those_of_the_definition():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(9, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3, 3])
    SoftMarginTripletLoss()(features, pids).backward()
    reference = features.detach().clone().requires_grad_(True)
    dist = (reference[:, None] - reference[None]).pow(2).sum(-1).add(torch.eye(9, dtype=torch.float64)).sqrt()
    terms = []
    for i in range(9):
        positive = torch.stack([dist[i, j] for j in range(9) if pids[j] == pids[i] and j != i]).max()
        negative = torch.stack([dist[i, j] for j in range(9) if pids[j] != pids[i]]).min()
        terms.append(torch.log1p(torch.exp(positive - negative)))
    torch.stack(terms).mean().backward()
    torch.testing.assert_close(features.grad, reference.grad)
