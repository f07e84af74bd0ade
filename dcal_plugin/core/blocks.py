"""DCAL's use of a timm ``Block``: the stacked SA + PWCA token streams, and the GLCA block.

Both functions compose the block's own sub-modules (``norm1``, ``attn``, ``ls1``, ``drop_path1``,
``norm2``, ``mlp``, ``ls2``, ``drop_path2``) exactly as timm's ``Block.forward`` does; only the
tensors handed to :func:`~dcal_plugin.core.attention.attend` differ.
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import (
    AttentionMap, MapRows, SoftmaxWithHeadMean, attend, attend_with_map, attention_dropout, merge_heads,
    pair_keys_and_values, project_kv, project_q, project_qk, project_qkv, records_gradient)
from .attention_map_kernel import softmax_with_head_mean


def self_and_pair_attention_block(
        block: nn.Module,
        x: Tensor,
        partner: Optional[Tensor] = None,
        map_rows: Optional[MapRows] = None,
        partner_gradient: bool = True,
        softmax: Optional[SoftmaxWithHeadMean] = softmax_with_head_mean,
        keep_queries_and_keys: bool = False,
) -> Tuple[Tensor, Optional[AttentionMap]]:
    """One block on the SA stream ``[B, N, C]``, or on ``[SA; PWCA]`` stacked ``[2B, N, C]`` when ``partner`` is given.

    SA rows attend over their own tokens. PWCA row ``b`` (row ``B + b`` of ``x``) attends over its
    own keys/values concatenated with those of SA row ``partner[b]`` at this same block (METHOD §4),
    with the block's weights shared. Returns the new stream and, when ``map_rows`` is given, the
    SA rows' head-averaged attention map as :func:`~dcal_plugin.core.attention.attend_with_map`
    gives it (``softmax`` computes it, or a deferred map recomputes the SA rows' queries and keys
    from ``x``; with ``keep_queries_and_keys``, while autograd records, it keeps them instead: the
    attention's backward saves them anyway, so they cost no memory and no recomputation, unless the
    block is checkpointed). Without ``partner_gradient`` the partner's keys/values are detached, so the PWCA
    rows send no gradient into the partner's SA stream.
    """
    q, k, v = project_qkv(block.attn, block.norm1(x))
    dropout_p = attention_dropout(block.attn)
    num_sa = x.shape[0] if partner is None else x.shape[0] // 2
    q_sa, k_sa, v_sa = q[:num_sa], k[:num_sa], v[:num_sa]
    if map_rows is None:
        out, attention_map = attend(q_sa, k_sa, v_sa, dropout_p), None
    else:
        if keep_queries_and_keys and records_gradient(q_sa, k_sa):
            saved = q_sa.detach(), k_sa.detach()
            recompute = lambda: saved  # noqa: E731
        else:
            recompute = functools.partial(self_attention_queries_and_keys, block, x[:num_sa].detach())
        out, attention_map = attend_with_map(q_sa, k_sa, v_sa, dropout_p, map_rows, recompute, softmax)
    out = merge_heads(block.attn, out)
    if partner is not None:
        pair_keys, pair_values = pair_keys_and_values(k, v, partner, partner_gradient)
        pair_out = attend(q[num_sa:], pair_keys, pair_values, dropout_p)
        # projected apart and joined after: the projection's backward keeps the attention outputs
        # themselves, not a joined copy of them
        out = torch.cat([out, merge_heads(block.attn, pair_out)])
    x = x + block.drop_path1(block.ls1(out))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, attention_map


def self_attention_queries_and_keys(block: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Queries and keys ``[B, H, N, D]`` of the tokens ``x [B, N, C]`` entering ``block``, as its attention computes
    them."""
    return project_qk(block.attn, block.norm1(x))


def global_local_cross_attention_block(block: nn.Module, x: Tensor, query_index: Tensor) -> Tensor:
    """GLCA block: tokens ``x [B, N, C]``, query positions ``[B, R]`` in the token sequence -> ``[B, R, C]``.

    Keys and values come from all N tokens; queries are computed only for the gathered ones; the
    residual and MLP act on the gathered tokens (METHOD §3).
    """
    normed = block.norm1(x)
    k, v = project_kv(block.attn, normed)
    gather_index = query_index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    q = project_q(block.attn, normed.gather(1, gather_index))
    out = attend(q, k, v, attention_dropout(block.attn))
    y = x.gather(1, gather_index) + block.drop_path1(block.ls1(merge_heads(block.attn, out)))
    return y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))
