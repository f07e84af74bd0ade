"""The one attention function of DCAL, and head split/merge around a timm ``Attention``'s weights.

SA, GLCA and PWCA differ only in which query, key and value tensors they hand to :func:`attend`:
SA passes a sequence's own ``q, k, v``; GLCA passes queries gathered at the selected tokens and
keys/values of all tokens; PWCA passes keys/values of two images concatenated along the tokens.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attend(
        q: Tensor,
        k: Tensor,
        v: Tensor,
        dropout_p: float = 0.0,
        need_weights: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """``softmax(q kᵀ / √D) v`` for q ``[B, H, Nq, D]``, k/v ``[B, H, Nk, D]`` -> ``([B, H, Nq, D], [B, Nq, Nk] | None)``.

    The second output is the attention map averaged over heads (before dropout), returned only
    when ``need_weights``; it never carries a gradient. When autograd records the call, the output
    comes from fused ``scaled_dot_product_attention`` and the map is computed beside it without
    gradient, so the backward pass stores no ``[B, H, Nq, Nk]`` tensor; otherwise the map and the
    output share one softmax.
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        with torch.no_grad():
            weights = _attention_probabilities(q, k).mean(dim=1)
        return out, weights
    probabilities = _attention_probabilities(q, k)
    out = F.dropout(probabilities, p=dropout_p) @ v if dropout_p > 0 else probabilities @ v
    return out, probabilities.mean(dim=1)


def _attention_probabilities(q: Tensor, k: Tensor) -> Tensor:
    """Row-stochastic ``softmax(q kᵀ / √D)`` ``[B, H, Nq, Nk]``, computed as timm's manual path does."""
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)


def project_qkv(attn: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[B, H, N, D]`` of tokens ``x [B, N, C]`` with a timm ``Attention``'s weights."""
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def project_q(attn: nn.Module, x: Tensor) -> Tensor:
    """Queries ``[B, H, Nq, D]`` of tokens ``x [B, Nq, C]``: only the query third of ``qkv`` is applied."""
    width = attn.num_heads * attn.head_dim
    bias = None if attn.qkv.bias is None else attn.qkv.bias[:width]
    q = F.linear(x, attn.qkv.weight[:width], bias)
    return attn.q_norm(_split_heads(q, attn.num_heads))


def project_kv(attn: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Keys and values ``[B, H, N, D]`` of tokens ``x [B, N, C]``: the query third of ``qkv`` is skipped."""
    width = attn.num_heads * attn.head_dim
    bias = None if attn.qkv.bias is None else attn.qkv.bias[width:]
    k, v = F.linear(x, attn.qkv.weight[width:], bias).chunk(2, dim=-1)
    return attn.k_norm(_split_heads(k, attn.num_heads)), _split_heads(v, attn.num_heads)


def merge_heads(attn: nn.Module, out: Tensor) -> Tensor:
    """Attention output ``[B, H, Nq, D]`` -> ``[B, Nq, C]`` through the timm ``Attention``'s output projection."""
    batch, heads, tokens, head_dim = out.shape
    out = attn.norm(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
    return attn.proj_drop(attn.proj(out))


def attention_dropout(attn: nn.Module) -> float:
    """The dropout probability on attention weights that a timm ``Attention`` applies in train mode."""
    return attn.attn_drop.p if attn.training else 0.0


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, N, H·D]`` -> ``[B, H, N, D]``."""
    batch, tokens, width = x.shape
    return x.reshape(batch, tokens, num_heads, width // num_heads).transpose(1, 2)
