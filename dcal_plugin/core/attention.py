"""The one attention function of DCAL, and head split/merge around a timm ``Attention``'s weights.

SA, GLCA and PWCA differ only in which query, key and value tensors they hand to :func:`attend`:
SA passes a sequence's own ``q, k, v``; GLCA passes queries gathered at the selected tokens and
keys/values of all tokens; PWCA passes keys/values of two images concatenated along the tokens.
"""
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# Bytes of one tile of probabilities [b, H, nq, Nk] in the CPU path that returns the map: about the
# size of a core's L2 cache, so that a tile is still cached when its softmax, head mean and P·V
# read it, instead of a [B, H, N, N] tensor streaming through memory four times (DCAL's eval
# forward at 448x448: 1.76x -> 1.27x timm's time; benchmarks/results/attention_variants_cpu.md).
CPU_TILE_BYTES = 2 << 20


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
    output share one softmax. On CPU that softmax is taken tile by tile (``CPU_TILE_BYTES``) so
    each tile's probabilities are used while still in cache.
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
    if records_gradient(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), attention_map(q, k)
    return _probabilities_by_tile(q, k, v, dropout_p)


@torch.no_grad()
def attention_map(q: Tensor, k: Tensor) -> Tensor:
    """Head mean of ``softmax(q kᵀ / √D)`` ``[B, Nq, Nk]`` for q ``[B, H, Nq, D]``, k ``[B, H, Nk, D]``, without gradient."""
    return _probabilities_by_tile(q, k)[1]


def records_gradient(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _probabilities_by_tile(
        q: Tensor, k: Tensor, v: Optional[Tensor] = None, dropout_p: float = 0.0,
) -> Tuple[Optional[Tensor], Tensor]:
    """Head mean of ``softmax(q kᵀ/√D)`` ``[B, Nq, Nk]`` and, if ``v`` is given, ``P·v`` ``[B, H, Nq, Dv]``.

    ``P·v`` is written straight into a ``[B, Nq, H, Dv]`` buffer (returned as a ``[B, H, Nq, Dv]``
    view), the layout the head merge reads without a copy, as SDPA's CPU output is.
    """
    batch, heads, queries, _ = q.shape
    q = q * q.shape[-1] ** -0.5  # as timm's manual path scales
    keys_t = k.contiguous().transpose(-2, -1)
    weights = q.new_empty(batch, queries, k.shape[2])
    out = None if v is None else q.new_empty(batch, queries, heads, v.shape[-1])
    v = None if v is None else v.contiguous()
    head_mean = q.new_full((batch, 1, heads), 1.0 / heads)
    for images, rows in _tiles(q, k.shape[2]):
        # (autocast may return the softmax in float32: back to the compute dtype, as timm's P·V casts it)
        probabilities = torch.matmul(q[images, :, rows], keys_t[images]).softmax(dim=-1).to(q.dtype)
        # the head mean as a [1, H] x [H, nq·Nk] product: one pass, no zero-fill of the output
        tile = probabilities.shape
        torch.bmm(head_mean[images], probabilities.view(tile[0], heads, -1),
                  out=weights[images, rows].view(tile[0], 1, -1))
        if v is not None:
            probabilities = F.dropout(probabilities, p=dropout_p) if dropout_p > 0 else probabilities
            torch.matmul(probabilities, v[images], out=out[images, rows].transpose(1, 2))
    return (None if out is None else out.transpose(1, 2)), weights


def _tiles(q: Tensor, num_keys: int) -> Iterator[Tuple[slice, slice]]:
    """``(images, query rows)`` slices covering ``q [B, H, Nq, D]``: ``CPU_TILE_BYTES`` of probabilities each on CPU, one tile elsewhere."""
    batch, heads, queries, _ = q.shape
    if q.device.type != 'cpu':
        yield slice(None), slice(None)
        return
    rows = max(1, CPU_TILE_BYTES // (heads * num_keys * q.element_size()))
    if rows >= queries:  # whole images per tile
        step = rows // queries
        for start in range(0, batch, step):
            yield slice(start, start + step), slice(None)
        return
    for image in range(batch):
        for start in range(0, queries, rows):
            yield slice(image, image + 1), slice(start, start + rows)


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
