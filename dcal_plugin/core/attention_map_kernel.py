"""``P·v`` and the head mean of ``P = softmax(q kᵀ/√D)`` from one softmax: the kernel behind every map the rollout
reads.

The model calls one function, :func:`softmax_with_head_mean` (its pieces are public for
``benchmarks/attention_variants.py``). On CPU it makes and uses the probabilities a
piece at a time, so each piece is still in cache when its head mean and ``P·v`` read it: head by
head through oneDNN's GEMM, or in tiles through ``torch.bmm`` (MKL), whichever
:func:`head_by_head_is_faster` measured faster on this machine for this shape. Elsewhere all of
``P`` is one tile; traced by ``torch.compile`` or ``torch.export`` (the ONNX export), all of ``P``
in plain operations that the compiler fuses and whose graph keeps the batch size free. The tile
size is an argument; its default comes from sweeps on the project's 2-core machine
(benchmarks/results/attention_map_kernel_sweeps.md).
"""
import functools
import math
import time
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

TILE_BYTES = 16 << 20  # bytes of probabilities per CPU tile: whole 448x448 images of DeiT-Tiny/Small per tile
CALIBRATION_RUNS = 2  # timed runs of each CPU path per shape (the fastest counts: the first also warms up)
_head_by_head_faster: Dict[tuple, bool] = {}  # head_by_head_is_faster's measurements, by shape and thread count


@torch.no_grad()
def softmax_with_head_mean(
        q: Tensor,
        k: Tensor,
        v: Optional[Tensor] = None,
        dropout_p: float = 0.0,
        tile_bytes: int = TILE_BYTES,
        head_by_head: Optional[bool] = None,
) -> Tuple[Optional[Tensor], Tensor]:
    """``(P·v [B, H, Nq, Dv] | None, mean_h P [B, Nq, Nk])`` for q ``[B, H, Nq, D]``, k/v ``[B, H, Nk, D]``, without
    gradient.

    ``P·v`` only when ``v`` is given; dropout (train mode) acts on ``P·v``, not on the map. On CPU,
    ``tile_bytes`` bounds the scratch memory of one piece of ``P``; float32 goes head by head
    through oneDNN when torch has it and ``head_by_head`` says so (None: when
    :func:`head_by_head_is_faster`), else in tiles through ``torch.bmm``.
    """
    if torch.compiler.is_compiling():  # traced by torch.compile or torch.export: plain operations, no loop over B
        return _whole(q, k, v, dropout_p)
    linear = onednn_linear()
    if linear is not None and q.device.type == 'cpu' and q.dtype == torch.float32 and torch.backends.mkldnn.enabled:
        if head_by_head is None:
            head_by_head = head_by_head_is_faster(q, k, v, tile_bytes)
        if head_by_head:
            return _by_head(q, k, v, dropout_p, linear, _head_rows(q, k, tile_bytes))
    return _by_tile(q, k, v, dropout_p, tile_bytes)


def head_by_head_is_faster(q: Tensor, k: Tensor, v: Optional[Tensor], tile_bytes: int = TILE_BYTES) -> bool:
    """Whether oneDNN head by head beats ``torch.bmm`` tiles on this machine for these float32 CPU inputs: measured
    once.

    Which is faster depends on the CPU, the BLAS torch ships and the shape (a oneDNN call costs
    more than a BLAS call, and its faster GEMM pays for that only on large products), so it is
    timed where it runs, the first time a shape (heads, rows, keys, head and value widths, tile
    size) meets a thread count: both paths on the inputs' first images (as many as threads),
    ``CALIBRATION_RUNS`` times each, the fastest run of each compared. Kept in memory for the
    process; it costs about four forward passes of one block on those images.
    """
    images = min(q.shape[0], torch.get_num_threads())
    key = (images, *q.shape[1:], k.shape[2], None if v is None else v.shape[-1], tile_bytes, torch.get_num_threads())
    if key not in _head_by_head_faster:
        q, k, v = q[:images], k[:images], None if v is None else v[:images]
        by_head = _fastest(lambda: _by_head(q, k, v, 0.0, onednn_linear(), _head_rows(q, k, tile_bytes)))
        by_tile = _fastest(lambda: _by_tile(q, k, v, 0.0, tile_bytes))
        _head_by_head_faster[key] = by_head < by_tile
    return _head_by_head_faster[key]


def _fastest(run: Callable[[], object]) -> float:
    """Seconds of the fastest of ``CALIBRATION_RUNS`` calls of ``run``."""
    seconds = []
    for _ in range(CALIBRATION_RUNS):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


@functools.lru_cache(maxsize=None)
def onednn_linear() -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """``(a [m, k], b [n, k]) -> a bᵀ [m, n]`` in float32 through oneDNN, or None where this torch lacks it.

    torch's own float32 ``mm``/``bmm`` call MKL; on the project's 2-core AMD EPYC (AVX-512) a
    [785, 64] x [64, 785] product runs faster through oneDNN, the library behind torch's fused CPU
    attention. The op is torch's internal ``mkldnn::_linear_pointwise``; it is checked once
    against ``torch.mm`` (on fixed numbers, so the global random stream is untouched) before it
    is trusted.
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


def _by_head(
        q: Tensor, k: Tensor, v: Optional[Tensor], dropout_p: float, linear: Callable[[Tensor, Tensor], Tensor],
        rows: int,
) -> Tuple[Optional[Tensor], Tensor]:
    """One image and head at a time, ``rows`` query rows per piece, both products by ``linear`` (``a bᵀ``).

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


def _by_tile(
        q: Tensor, k: Tensor, v: Optional[Tensor], dropout_p: float, tile_bytes: int,
) -> Tuple[Optional[Tensor], Tensor]:
    """Tiles of :func:`tiles` through ``torch.bmm``; one scratch buffer holds every tile's scores, made probabilities in
    place.

    ``P·v`` ``[B, H, Nq, Dv]`` is written tile by tile into its output by ``bmm`` itself (a
    ``[B, Nq, H, Dv]`` layout would make every tile's product go through a temporary and a copy).
    """
    batch, heads, queries, _ = q.shape
    num_keys = k.shape[2]
    weights = q.new_empty(batch, queries, num_keys)
    q = scaled_contiguous_queries(q)
    keys_t = k.contiguous().transpose(-2, -1)
    out = None if v is None else q.new_empty(batch, heads, queries, v.shape[-1])
    v = None if v is None else v.contiguous()
    head_mean = q.new_full((batch, 1, heads), 1.0 / heads)
    pieces = list(tiles(q, num_keys, tile_bytes))
    first = q[pieces[0][0], :, pieces[0][1]].shape
    scratch = q.new_empty(first[0] * heads * first[2] * num_keys)
    for images, rows in pieces:
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


def _whole(q: Tensor, k: Tensor, v: Optional[Tensor], dropout_p: float) -> Tuple[Optional[Tensor], Tensor]:
    """All of ``P`` at once in plain operations: ``(P·v | None, mean_h P)``, dropout on ``P·v`` only."""
    probabilities = torch.softmax(torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)), dim=-1)
    out = None if v is None else torch.matmul(F.dropout(probabilities, p=dropout_p), v)
    return out, probabilities.mean(dim=1)


def scaled_contiguous_queries(q: Tensor) -> Tensor:
    """``q / √D`` ``[B, H, Nq, D]`` in contiguous order, as timm's manual path scales.

    An elementwise result keeps its input's (permuted) layout, and every tile's matrix product
    would then copy its queries first.
    """
    return torch.mul(q, q.shape[-1] ** -0.5, out=torch.empty(q.shape, dtype=q.dtype, device=q.device))


def write_head_mean(probabilities: Tensor, head_mean: Tensor, out: Tensor) -> None:
    """Mean over heads of ``probabilities`` ``[b, H, nq, Nk]`` into ``out`` ``[b, nq, Nk]``; ``head_mean`` is
    ``[b, 1, H]`` of 1/H.

    One ``[1, H] x [H, nq·Nk]`` product per image: one pass, no zero-fill of the output.
    """
    images, heads = probabilities.shape[:2]
    torch.bmm(head_mean, probabilities.view(images, heads, -1), out=out.view(images, 1, -1))


def tiles(q: Tensor, num_keys: int, tile_bytes: int = TILE_BYTES) -> Iterator[Tuple[slice, slice]]:
    """``(images, query rows)`` slices covering ``q [B, H, Nq, D]``, the largest first: ``tile_bytes`` of probabilities
    each on CPU, one tile elsewhere.

    A tile of query rows spans as many images as it takes for its ``images × H`` matrix products
    to split evenly over torch's threads (3 heads on 2 threads: 2 images per tile).
    """
    batch, heads, queries, _ = q.shape
    if q.device.type != 'cpu':
        yield slice(None), slice(None)
        return
    rows = _rows_per_tile(num_keys, heads, q.element_size(), tile_bytes)
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


def _head_rows(q: Tensor, k: Tensor, tile_bytes: int) -> int:
    """Query rows per piece of one image and head on the head-by-head path."""
    return min(q.shape[2], _rows_per_tile(k.shape[2], 1, q.element_size(), tile_bytes))


def _rows_per_tile(num_keys: int, heads: int, element_size: int, tile_bytes: int) -> int:
    """Query rows whose probabilities over ``num_keys`` keys for ``heads`` heads fill ``tile_bytes`` (at least 1)."""
    return max(1, tile_bytes // (heads * num_keys * element_size))
