"""The soft-margin batch-hard triplet loss of TransReID's ViT baseline (``NO_MARGIN: True``), which torchreid lacks."""
from torch import Tensor, nn
from torch.nn import functional as F


class SoftMarginTripletLoss(nn.Module):
    """Batch-hard triplet loss with a soft margin: ``mean_i softplus(d(i, p_i) - d(i, n_i))``.

    Mining as torchreid's ``TripletLoss`` (Hermans et al., 2017): Euclidean distances
    ``sqrt(max(|a|² + |b|² - 2a·b, 1e-12))``, per anchor i the farthest image of its identity
    ``p_i`` (itself included) and the nearest image of another identity ``n_i``. Instead of
    torchreid's hinge ``max(0, d_ap - d_an + margin)``, the soft margin ``log(1 + exp(d_ap - d_an))``
    is torch's ``SoftMarginLoss(d_an - d_ap, 1)``, as TransReID's triplet loss without a margin.
    """

    def forward(self, features: Tensor, pids: Tensor) -> Tensor:
        """Features ``[B, C]`` (before BNNeck) and identities ``[B]`` -> scalar loss."""
        squared = features.pow(2).sum(dim=1, keepdim=True)
        dist = (squared + squared.T - 2 * features @ features.T).clamp(min=1e-12).sqrt()
        same = pids[:, None] == pids[None, :]
        hardest_positive = dist.masked_fill(~same, float('-inf')).amax(dim=1)
        hardest_negative = dist.masked_fill(same, float('inf')).amin(dim=1)
        return F.softplus(hardest_positive - hardest_negative).mean()
