"""Independent, loop-based formulas of METHOD §1–4, written without dcal_plugin's attention code.

Each function works on one image at a time and one head at a time, with the weights read
straight from a timm ``Block``; nothing here calls ``scaled_dot_product_attention``.
"""
import torch
from torch import Tensor


def head_weights(block, head: int):
    """Per-head query/key/value weight and bias slices of a timm block's ``qkv``: ``[D, C]``, ``[D]``."""
    attn = block.attn
    width, d = attn.num_heads * attn.head_dim, attn.head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    rows = [slice(part * width + head * d, part * width + (head + 1) * d) for part in range(3)]
    return [(weight[r], bias[r]) for r in rows]


def attention_row(query: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """One query ``[D]`` over keys/values ``[M, D]``: ``Σ_j softmax_j(q·k_j/√D) v_j``."""
    logits = keys @ query / query.shape[0] ** 0.5
    return torch.softmax(logits, dim=0) @ values


def cross_attention_block(block, queries_in: Tensor, context: Tensor) -> Tensor:
    """A pre-norm block where tokens ``queries_in [Nq, C]`` attend over ``context [M, C]`` (already part of the
    keys)."""
    attn = block.attn
    q_tokens, kv_tokens = block.norm1(queries_in), block.norm1(context)
    heads = []
    for head in range(attn.num_heads):
        (wq, bq), (wk, bk), (wv, bv) = head_weights(block, head)
        keys, values = kv_tokens @ wk.T + bk, kv_tokens @ wv.T + bv
        heads.append(torch.stack([attention_row(t @ wq.T + bq, keys, values) for t in q_tokens]))
    y = queries_in + attn.proj(torch.cat(heads, dim=-1))
    return y + block.mlp(block.norm2(y))


def head_mean_attention(block, tokens: Tensor) -> Tensor:
    """Head-averaged self-attention map ``[N, N]`` of one image's tokens ``[N, C]`` entering ``block``."""
    normed = block.norm1(tokens)
    maps = []
    for head in range(block.attn.num_heads):
        (wq, bq), (wk, bk), _ = head_weights(block, head)
        q, k = normed @ wq.T + bq, normed @ wk.T + bk
        maps.append(torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1))
    return torch.stack(maps).mean(0)


def rollout_full(maps, residual_weight: float = 0.5) -> Tensor:
    """Plain loop over full matrix products: ``Ŝ = S̄_L ⋯ S̄_1`` for maps ``[N, N]`` (float64)."""
    result = None
    for attention in maps:
        attention = attention.double()
        augmented = ((1 - residual_weight) * attention
                     + residual_weight * torch.eye(attention.shape[0], dtype=torch.float64))
        augmented = augmented / augmented.sum(-1, keepdim=True)
        result = augmented if result is None else augmented @ result
    return result


def batched_rollout_full(maps, residual_weight: float = 0.5) -> Tensor:
    """:func:`rollout_full` of each image ``[B, N, N]``, maps ``[B, H, N, N]`` (head-averaged) or ``[B, N, N]``."""
    averaged = [attention.mean(1) if attention.dim() == 4 else attention for attention in maps]
    return torch.stack([rollout_full([attention[b] for attention in averaged], residual_weight)
                        for b in range(averaged[0].shape[0])])


def pooled_glca(model, tokens: Tensor, patch_index: Tensor):
    """GLCA of one image ``tokens [N, C]``: its block on tokens ``1 + patch_index`` -> mean -> norm -> (feature,
    logits)."""
    pooled = cross_attention_block(model.glca_block, tokens[patch_index + 1], tokens).mean(0)
    feature = model.glca_norm(pooled)
    return feature, model.glca_head(feature)
