"""The one attention function of DCAL, and head split/merge around a timm ``Attention``'s weights.

SA, GLCA and PWCA differ only in which query, key and value tensors they hand to :func:`attend`:
SA passes a sequence's own ``q, k, v``; GLCA passes queries gathered at the selected tokens and
keys/values of all tokens; PWCA passes keys/values of two images concatenated along the tokens.
"""
import functools
import math
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# Bytes of one tile of probabilities [b, H, nq, Nk] in the CPU path that returns the map through
# ``torch.bmm`` (and of one head's [nq, Nk] block head by head): a bound on the scratch memory, large
# enough that a tile holds whole images at 448x448 for DeiT-Tiny/Small (7.4 / 14.8 MB each at batch
# 8). Swept on the 2-core machine, whole eval forward ÷ timm at 448, in bmm tiles (before the
# head-by-head path): 4 MB 1.46 / 1.10, 16 MB 1.10 / 1.10, 64 MB 1.14 / 1.13, one tile 1.15 / 1.13
# (DeiT-Tiny / DeiT-Small).
CPU_TILE_BYTES = 16 << 20

# Fewest scores (query rows x keys) of one image and head for which the CPU path that returns the
# map multiplies head by head through oneDNN (see :func:`onednn_linear`) rather than batching tiles
# through ``torch.bmm``: a oneDNN call costs 12 us where a BLAS call costs 6, and its faster GEMM
# pays for that from about 300 x 300. Swept on the 2-core machine (one block's attention with its
# map, batch 8, ms in bmm tiles / head by head; 3 heads, then 6): 197 tokens 1.96 / 2.92, 3.94 /
# 6.05; 257 tokens 3.00 / 3.88, 6.44 / 7.71; 325 tokens 4.96 / 4.69, 10.15 / 9.46; 785 tokens
# 26.3 / 18.6, 59.9 / 36.3.
ONEDNN_MIN_SCORES = 300 * 300


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
    output share one softmax (:func:`shared_softmax`).
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
    if records_gradient(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), attention_map(q, k)
    return shared_softmax(q, k, v, dropout_p)


def attention_map(q: Tensor, k: Tensor) -> Tensor:
    """Head mean of ``softmax(q kᵀ / √D)`` ``[B, Nq, Nk]`` for q ``[B, H, Nq, D]``, k ``[B, H, Nk, D]``, without gradient."""
    return shared_softmax(q, k)[1]


@torch.no_grad()
def shared_softmax(
        q: Tensor, k: Tensor, v: Optional[Tensor] = None, dropout_p: float = 0.0,
) -> Tuple[Optional[Tensor], Tensor]:
    """Head mean of ``P = softmax(q kᵀ/√D)`` ``[B, Nq, Nk]`` and, if ``v`` is given, ``P·v`` ``[B, H, Nq, Dv]``, from one softmax, without gradient.

    On CPU the probabilities are made and used a piece at a time, so each piece is still in cache
    when its head mean and ``P·v`` read it: head by head through oneDNN's GEMM for float32 score
    matrices of ``ONEDNN_MIN_SCORES`` or more when torch has oneDNN, else in tiles of
    ``CPU_TILE_BYTES`` through ``torch.bmm``. Elsewhere all of ``P`` is one tile.
    """
    linear = onednn_linear()
    rows = min(q.shape[2], _rows_per_tile(k.shape[2], 1, q.element_size()))
    if (linear is not None and q.device.type == 'cpu' and q.dtype == torch.float32
            and rows * k.shape[2] >= ONEDNN_MIN_SCORES and torch.backends.mkldnn.enabled):
        return _probabilities_by_head(q, k, v, dropout_p, linear, rows)
    return _probabilities_by_tile(q, k, v, dropout_p)


@functools.lru_cache(maxsize=None)
def onednn_linear() -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """``(a [m, k], b [n, k]) -> a bᵀ [m, n]`` in float32 through oneDNN, or None where this torch lacks it.

    torch's own float32 ``mm``/``bmm`` call MKL; on this project's 2-core AMD EPYC (AVX-512) a
    [785, 64] x [64, 785] product runs at 200 GFLOP/s through MKL and 330 through oneDNN, the
    library behind torch's fused CPU attention. The op is torch's internal
    ``mkldnn::_linear_pointwise``; it is checked once against ``torch.mm`` (on fixed numbers, so the
    global random stream is untouched) before it is trusted.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise

        def linear(a: Tensor, b: Tensor) -> Tensor:
            return op(a, b, None, 'none', [], '')

        a, b = torch.linspace(-1, 1, 15).view(3, 5), torch.linspace(-2, 1, 20).view(4, 5)
        works = torch.allclose(linear(a, b), a @ b.T, rtol=1e-5, atol=1e-6)
    except (AttributeError, RuntimeError):
        return None
    return linear if works else None


def _probabilities_by_head(
        q: Tensor, k: Tensor, v: Optional[Tensor], dropout_p: float, linear: Callable[[Tensor, Tensor], Tensor],
        rows: int,
) -> Tuple[Optional[Tensor], Tensor]:
    """:func:`shared_softmax` one image and head at a time, ``rows`` query rows per block, both products by ``linear`` (``a bᵀ``).

    Each head's probabilities ``[rows, Nk]`` are added into the head mean and multiplied by v
    right after their softmax. ``P·v`` is written into a ``[B, Nq, H, Dv]`` buffer and returned as
    its ``[B, H, Nq, Dv]`` view, so merging the heads afterwards needs no copy.
    """
    batch, heads, queries, _ = q.shape
    num_keys = k.shape[2]
    weights = q.new_empty(batch, queries, num_keys)
    q, k = scaled_contiguous_queries(q), k.contiguous()
    values_t = None if v is None else v.transpose(-2, -1).contiguous()
    out = None if v is None else q.new_empty(batch, queries, heads, v.shape[-1])
    for image in range(batch):
        for start in range(0, queries, rows):
            block = slice(start, start + rows)
            head_mean = weights[image, block]
            for head in range(heads):
                probabilities = linear(q[image, head, block], k[image, head])
                torch.softmax(probabilities, dim=-1, out=probabilities)
                if head == 0:
                    torch.mul(probabilities, 1.0 / heads, out=head_mean)
                else:
                    head_mean.add_(probabilities, alpha=1.0 / heads)
                if values_t is not None:
                    probabilities = F.dropout(probabilities, p=dropout_p) if dropout_p > 0 else probabilities
                    out[image, block, head] = linear(probabilities, values_t[image, head])
    return None if out is None else out.transpose(1, 2), weights


def _rows_per_tile(num_keys: int, heads: int, element_size: int) -> int:
    """Query rows whose probabilities over ``num_keys`` keys for ``heads`` heads fill ``CPU_TILE_BYTES`` (at least 1)."""
    return max(1, CPU_TILE_BYTES // (heads * num_keys * element_size))


def records_gradient(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _probabilities_by_tile(
        q: Tensor, k: Tensor, v: Optional[Tensor], dropout_p: float) -> Tuple[Optional[Tensor], Tensor]:
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
    rows = _rows_per_tile(num_keys, heads, q.element_size())
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
