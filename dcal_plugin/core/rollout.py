"""Attention rollout (Abnar & Zuidema 2020, METHOD §2) and the selection of GLCA's local queries."""
from typing import Optional, Sequence

import torch
from torch import Tensor

from .deferred_map import AttentionMap, DeferredMap, head_mean_rows, row_times_head_mean


@torch.no_grad()
def class_token_rollout(
        attentions: Sequence[AttentionMap], residual_weight: float = 0.5, rows_sum_to_one: bool = False,
        num_prefix_tokens: int = 1) -> Tensor:
    """Row 0, columns P..N-1 of the rollout ``Ŝ = S̄_L ⋯ S̄_1`` (METHOD §2): patch scores ``[B, N-P]``, no gradient.

    ``S̄_l = rownorm((1 - residual_weight)·mean_h(S_l) + residual_weight·I)`` [ours, as Abnar & Zuidema];
    the latest block multiplies on the left.

    Token 0 is the class token; tokens 1..P-1 are the model's other prefix tokens (registers, a
    distillation token): they take part in every map, and the chain, but get no score.

    Computed as the vector–matrix chain ``e₀ᵀ S̄_L ⋯ S̄_1`` in float32, autocast off: O(L·N²) per
    image, never an ``N×N×N`` product. Each ``S̄_l`` is applied without being formed:
    ``r·S̄ = (1-α)·(r/s)·A + α·(r/s)`` with ``s`` the row sums of ``(1-α)·A + α·I``. Each map is
    read once, the last block's first, and not kept. A map is a tensor, or deferred
    (:mod:`~dcal_plugin.core.deferred_map`): then ``r·A`` is computed a chunk of rows at a time
    from the queries and keys it gives when read, so that no map exists whole, and its rows are
    softmax rows (``s = 1``). Of the last block only the class token's row enters, so its map may
    be given as that row alone, ``[B, 1, N]`` (or ``[B, H, 1, N]``). ``rows_sum_to_one`` says the
    tensor maps are softmax outputs: then ``s = 1`` and each is read once (for ``r·A``) instead of twice.
    """
    if len(attentions) == 0:
        raise ValueError('attention rollout needs at least one attention map')
    last = attentions[-1]
    last = (head_mean_rows(last, queries=1) if isinstance(last, DeferredMap)
            else _head_mean(_checked_map(last, None, class_row_allowed=True)))
    shape = last.shape[:1] + last.shape[-1:] * 2
    with torch.autocast(last.device.type, enabled=False):  # float32 under mixed precision too
        row = class_row_of_residual_map(last[:, 0].float(), residual_weight)
    for index in reversed(range(len(attentions) - 1)):
        attention = attentions[index]
        attention = attention if isinstance(attention, DeferredMap) else _head_mean(_checked_map(attention, shape))
        row = apply_residual_map(row, attention, residual_weight, rows_sum_to_one)
    return row[:, num_prefix_tokens:]


def select_local_queries(scores: Tensor, ratio: float) -> Tensor:
    """Indices ``[B, R]`` of the ``R = max(1, round(ratio·P))`` highest of ``scores [B, P]``, highest first."""
    count = num_local_queries(scores.shape[-1], ratio)
    return scores.topk(count, dim=-1).indices


def random_local_queries(batch: int, num_patches: int, ratio: float, device: torch.device) -> Tensor:
    """Indices ``[B, R]`` of R distinct patches per image, drawn uniformly at random (the paper's "random queries"
    ablation)."""
    count = num_local_queries(num_patches, ratio)
    return torch.rand(batch, num_patches, device=device).topk(count, dim=-1).indices


def num_local_queries(num_patches: int, ratio: float) -> int:
    """R of :func:`select_local_queries` for P patches: ``max(1, round(ratio·P))``."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f'local query ratio must lie in (0, 1], got {ratio}')
    return max(1, round(ratio * num_patches))


def apply_residual_map(
        row: Tensor, attention: AttentionMap, residual_weight: float, rows_sum_to_one: bool) -> Tensor:
    """``row [B, N] · S̄`` where ``S̄ = rownorm((1-α)·attention + α·I)``, attention ``[B, N, N]`` or deferred.

    With ``rows_sum_to_one`` the attention's rows are taken to sum to 1, so ``S̄``'s do too; a
    deferred map's rows are softmax rows.
    """
    if isinstance(attention, DeferredMap):
        scaled, mixed = row, row_times_head_mean(row, attention)
    else:
        with torch.autocast(row.device.type, enabled=False):
            attention = attention.float()
            scaled = (row if rows_sum_to_one
                      else row / ((1.0 - residual_weight) * attention.sum(dim=-1) + residual_weight))
            mixed = torch.bmm(scaled.unsqueeze(1), attention).squeeze(1)
    return (1.0 - residual_weight) * mixed + residual_weight * scaled


def class_row_of_residual_map(class_row: Tensor, residual_weight: float) -> Tensor:
    """Row 0 of ``S̄ = rownorm((1-α)·A + α·I)`` ``[B, N]`` from row 0 of ``A`` ``[B, N]``."""
    mixed = (1.0 - residual_weight) * class_row
    mixed[:, 0] += residual_weight
    return mixed / mixed.sum(dim=-1, keepdim=True)


def _head_mean(attention: Tensor) -> Tensor:
    """``[B, H, N, N]`` -> ``[B, N, N]``; a 3-D map is taken as already head-averaged."""
    return attention.mean(dim=1) if attention.dim() == 4 else attention


def _head_mean_shape(attention: Tensor) -> torch.Size:
    return attention.shape[:1] + attention.shape[-2:]


def _checked_map(attention: Tensor, shape: Optional[torch.Size], class_row_allowed: bool = False) -> Tensor:
    """Validate one map, ``[B, H, N, N]`` or ``[B, N, N]`` (or its class row ``[B, (H,) 1, N]`` if allowed), of
    head-mean ``shape`` when given."""
    rows = attention.shape[-2] if attention.dim() in (3, 4) else None
    if rows is None or (rows != attention.shape[-1] and not (class_row_allowed and rows == 1)):
        raise ValueError(f'attention maps must be [B, H, N, N] or [B, N, N], got {tuple(attention.shape)}')
    if shape is not None and _head_mean_shape(attention) != shape:
        raise ValueError(f'attention maps differ in shape: {tuple(shape)} vs {tuple(attention.shape)}')
    return attention
