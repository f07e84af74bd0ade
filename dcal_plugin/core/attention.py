"""The one attention function of DCAL, and head split/merge around a timm ``Attention``'s weights.

SA, GLCA and PWCA differ only in which query, key and value tensors they hand to :func:`attend`:
SA passes a sequence's own ``q, k, v``; GLCA passes queries gathered at the selected tokens and
keys/values of all tokens; PWCA passes keys/values of two images concatenated along the tokens.
"""
import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# Bytes of one tile of probabilities [b, H, nq, Nk] in the CPU path that returns the map: a bound on
# the scratch memory, large enough that a tile holds whole images at 448x448 for DeiT-Tiny/Small
# (7.4 / 14.8 MB each at batch 8). Swept on the 2-core machine, whole eval forward ÷ timm at 448
# (benchmarks/results/attention_variants_cpu_448_malloc-tuned.md and the README): 4 MB 1.46 / 1.10,
# 16 MB 1.10 / 1.10, 64 MB 1.14 / 1.13, one tile 1.15 / 1.13 (DeiT-Tiny / DeiT-Small).
CPU_TILE_BYTES = 16 << 20


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
    """Head mean of ``softmax(q kᵀ/√D)`` ``[B, Nq, Nk]`` and, if ``v`` is given, ``P·v``.

    ``P·v`` ``[B, H, Nq, Dv]`` is written tile by tile into its output by ``bmm`` itself (a
    ``[B, Nq, H, Dv]`` layout would make every tile's product go through a temporary and a copy).
    One scratch buffer holds every tile's scores, turned into probabilities in place.
    """
    batch, heads, queries, _ = q.shape
    num_keys = k.shape[2]
    weights = q.new_empty(batch, queries, num_keys)
    q = scaled_contiguous_queries(q)
    keys_t = k.contiguous().transpose(-2, -1)
    out = None if v is None else q.new_empty(batch, heads, queries, v.shape[-1])
    v = None if v is None else v.contiguous()
    head_mean = q.new_full((batch, 1, heads), 1.0 / heads)
    tiles = list(_tiles(q, num_keys))
    first = q[tiles[0][0], :, tiles[0][1]].shape
    scratch = q.new_empty(first[0] * heads * first[2] * num_keys)
    for images, rows in tiles:
        tile_q = q[images, :, rows]
        probabilities = scratch[:tile_q.numel() // tile_q.shape[-1] * num_keys].view(*tile_q.shape[:-1], num_keys)
        torch.matmul(tile_q, keys_t[images], out=probabilities)
        torch.softmax(probabilities, dim=-1, out=probabilities)
        write_head_mean(probabilities, head_mean[images], weights[images, rows])
        if v is not None:
            probabilities = F.dropout(probabilities, p=dropout_p) if dropout_p > 0 else probabilities
            products = probabilities.shape[0] * heads
            torch.bmm(probabilities.view(products, -1, num_keys), v[images].view(products, num_keys, -1),
                      out=out[images, :, rows].view(products, probabilities.shape[2], -1))
    return out, weights


def scaled_contiguous_queries(q: Tensor) -> Tensor:
    """``q / √D`` ``[B, H, Nq, D]`` in contiguous order, as timm's manual path scales.

    An elementwise result keeps its input's (permuted) layout, and every tile's matrix product
    would then copy its queries first.
    """
    return torch.mul(q, q.shape[-1] ** -0.5, out=torch.empty(q.shape, dtype=q.dtype, device=q.device))


def write_head_mean(probabilities: Tensor, head_mean: Tensor, out: Tensor) -> None:
    """Mean over heads of ``probabilities`` ``[b, H, nq, Nk]`` into ``out`` ``[b, nq, Nk]``; ``head_mean`` is ``[b, 1, H]`` of 1/H.

    One ``[1, H] x [H, nq·Nk]`` product per image: one pass, no zero-fill of the output.
    """
    images, heads = probabilities.shape[:2]
    torch.bmm(head_mean, probabilities.view(images, heads, -1), out=out.view(images, 1, -1))


def _tiles(q: Tensor, num_keys: int) -> Iterator[Tuple[slice, slice]]:
    """``(images, query rows)`` slices covering ``q [B, H, Nq, D]``, the largest first: ``CPU_TILE_BYTES`` of probabilities each on CPU, one tile elsewhere.

    A tile of query rows spans as many images as it takes for its ``images × H`` matrix products
    to split evenly over torch's threads (3 heads on 2 threads: 2 images per tile).
    """
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
    threads = torch.get_num_threads()
    step = min(batch, threads // math.gcd(heads, threads))
    rows = max(1, rows // step)
    for image in range(0, batch, step):
        for start in range(0, queries, rows):
            yield slice(image, image + step), slice(start, start + rows)


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
