"""DCAL's use of a timm ``Block``: the stacked SA + PWCA token streams, and the GLCA block.

Both functions compose the block's own sub-modules (``norm1``, ``attn``, ``ls1``, ``drop_path1``,
``norm2``, ``mlp``, ``ls2``, ``drop_path2``) exactly as timm's ``Block.forward`` does; only the
tensors handed to :func:`~dcal_plugin.core.attention.attend` differ.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import attend, attention_dropout, merge_heads, project_kv, project_q, project_qkv


def self_and_pair_attention_block(
        block: nn.Module,
        x: Tensor,
        partner: Optional[Tensor] = None,
        need_weights: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """One block on the SA stream ``[B, N, C]``, or on ``[SA; PWCA]`` stacked ``[2B, N, C]`` when ``partner`` is given.

    SA rows attend over their own tokens. PWCA row ``b`` (row ``B + b`` of ``x``) attends over its
    own keys/values concatenated with those of SA row ``partner[b]`` at this same block (METHOD §4),
    with the block's weights shared. Returns the new stream and, if ``need_weights``, the SA
    rows' head-averaged attention map ``[B, N, N]`` (no gradient).
    """
    q, k, v = project_qkv(block.attn, block.norm1(x))
    dropout_p = attention_dropout(block.attn)
    num_sa = x.shape[0] if partner is None else x.shape[0] // 2
    out, weights = attend(q[:num_sa], k[:num_sa], v[:num_sa], dropout_p, need_weights)
    if partner is not None:
        pair_keys = torch.cat([k[num_sa:], k[partner]], dim=2)
        pair_values = torch.cat([v[num_sa:], v[partner]], dim=2)
        pair_out, _ = attend(q[num_sa:], pair_keys, pair_values, dropout_p)
        out = torch.cat([out, pair_out])
    x = x + block.drop_path1(block.ls1(merge_heads(block.attn, out)))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, weights


def global_local_cross_attention_block(block: nn.Module, x: Tensor, query_index: Tensor) -> Tensor:
    """GLCA block: tokens ``x [B, N, C]``, query positions ``[B, 1+R]`` (class token first) -> ``[B, 1+R, C]``.

    Keys and values come from all N tokens; queries are computed only for the gathered ones; the
    residual and MLP act on the gathered tokens (METHOD §3).
    """
    normed = block.norm1(x)
    k, v = project_kv(block.attn, normed)
    gather_index = query_index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    q = project_q(block.attn, normed.gather(1, gather_index))
    out, _ = attend(q, k, v, attention_dropout(block.attn))
    y = x.gather(1, gather_index) + block.drop_path1(block.ls1(merge_heads(block.attn, out)))
    return y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))
