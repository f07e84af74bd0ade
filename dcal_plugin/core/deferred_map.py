"""An SA block's head-averaged attention map kept as the queries and keys it comes from, read a chunk of rows at a time.

The rollout needs only the class token's row of ``S̄_i ⋯ S̄_1`` (METHOD §2), the latest block on
the left: ``r = e₀ᵀ S̄_i``, then ``r ← r·S̄_l`` for ``l = i-1 … 1``. The forward pass meets the blocks
in the other order, so a vector chain cannot start before block ``i`` (the forward order would
carry the ``N×N`` product ``S̄_l ⋯ S̄_1``, at ``N³`` per block). Each block therefore keeps the
means to compute ``r·mean_h(P)`` later: its queries and keys, or, what costs no memory in
training, the tokens entering it, from which they are recomputed (autograd or activation
checkpointing keeps those tokens anyway). :func:`row_times_head_mean` then computes
``r·mean_h softmax(q kᵀ/√D)`` a chunk of query rows at a time: ``Σ_i r_i·P̄_i`` needs no
``[B, H, N, N]`` buffer and no ``[B, N, N]`` map, only ``CHUNK_BYTES`` of probabilities.
"""
from typing import Callable, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

# what a deferred map keeps: a function giving the queries [B, H, Nq, D] and keys [B, H, Nk, D] the map comes from
QueriesAndKeys = Callable[[], Tuple[Tensor, Tensor]]


class DeferredMap:
    """A block's head-averaged map ``mean_h softmax(q kᵀ/√D)`` ``[B, Nq, Nk]``, not yet computed: it keeps
    ``queries_and_keys``, which gives ``q`` and ``k``; :func:`read_map` makes the tensor."""

    __slots__ = ('queries_and_keys',)

    def __init__(self, queries_and_keys: QueriesAndKeys) -> None:
        self.queries_and_keys = queries_and_keys


# a block's head-averaged map [B, Nq, Nk], or a deferred one (inside the model; what it returns is read)
AttentionMap = Union[Tensor, DeferredMap]
CHUNK_BYTES = 32 << 20  # float32 probabilities per chunk off CPU: one image of ViT-B/16 at 448 (29.6 MB)
CPU_CHUNK_BYTES = 2 << 20  # on CPU: within a core's L2 cache, so softmax and product read the chunk from cache


@torch.no_grad()
def row_times_head_mean(row: Tensor, deferred: DeferredMap, chunk_bytes: Optional[int] = None) -> Tensor:
    """``row [B, Nq] · mean_h softmax(q kᵀ/√D)`` ``[B, Nk]`` in float32, from the ``q, k`` that ``deferred`` gives.

    One chunk at a time: its probabilities ``[b, H, c, Nk]`` are multiplied by the chunk's entries
    of ``row`` (divided by H) and added into the result by one batched product. ``chunk_bytes``
    bounds a chunk's probabilities (None: :func:`chunk_bytes_on`, read when called).
    """
    q, k = deferred.queries_and_keys()
    if q.shape[2] != row.shape[-1]:
        raise ValueError(f'a row of {row.shape[-1]} entries cannot multiply a map of {q.shape[2]} rows')
    heads = q.shape[1]
    with torch.autocast(q.device.type, enabled=False):
        out = row.new_zeros(q.shape[0], 1, k.shape[2], dtype=torch.float32)
        for images, rows, probabilities in _chunks(q, k, chunk_bytes):
            weights = (row[images, rows].float() / heads).unsqueeze(1).expand(-1, heads, -1)
            count = probabilities.shape[0]
            out[images].baddbmm_(weights.reshape(count, 1, -1), probabilities.view(count, -1, k.shape[2]))
    return out.squeeze(1)


@torch.no_grad()
def head_mean_rows(deferred: DeferredMap, queries: Optional[int] = None, chunk_bytes: Optional[int] = None) -> Tensor:
    """The map itself, ``mean_h softmax(q kᵀ/√D)`` ``[B, Nq, Nk]`` in float32, or its first ``queries`` rows (the class
    row)."""
    q, k = deferred.queries_and_keys()
    q = q[:, :, :queries]
    with torch.autocast(q.device.type, enabled=False):
        out = q.new_empty(q.shape[0], q.shape[2], k.shape[2], dtype=torch.float32)
        for images, rows, probabilities in _chunks(q, k, chunk_bytes):
            out[images, rows] = probabilities.mean(dim=1)
    return out


def read_map(attention_map: AttentionMap) -> Tensor:
    """A map as a tensor ``[B, Nq, Nk]``: computed now if it is deferred."""
    return attention_map if isinstance(attention_map, Tensor) else head_mean_rows(attention_map)


def chunk_bytes_on(device: torch.device) -> int:
    """Bytes of probabilities per chunk on ``device``: ``CPU_CHUNK_BYTES`` on CPU, else ``CHUNK_BYTES``."""
    return CPU_CHUNK_BYTES if device.type == 'cpu' else CHUNK_BYTES


def _chunks(q: Tensor, k: Tensor, chunk_bytes: Optional[int]) -> Iterator[Tuple[slice, slice, Tensor]]:
    """``(images, query rows, softmax(q kᵀ/√D) [b, H, c, Nk])`` in float32 over ``q [B, H, Nq, D]``; autocast must be
    off.

    A chunk holds as many whole images as ``chunk_bytes`` allows, or rows of one image; traced, rows
    of every image, so that the graph keeps the batch size free. Half-precision
    queries and keys are taken to float32 first, so the probabilities (and the rollout's top-R)
    do not rest on half-precision scores.
    """
    batch, heads, queries, head_dim = q.shape
    keys_t = k.float().transpose(-2, -1)
    rows = max(1, (chunk_bytes or chunk_bytes_on(q.device)) // (heads * k.shape[2] * 4))
    if torch.compiler.is_compiling():  # traced (torch.compile, the ONNX export): rows of every image, batch size free
        for start in range(0, queries, rows):
            chunk = slice(start, start + rows)
            yield slice(None), chunk, torch.softmax(torch.matmul(q[:, :, chunk].float() * head_dim ** -0.5, keys_t), -1)
        return
    step, rows = (rows // queries, queries) if rows >= queries else (1, rows)
    for image in range(0, batch, step):
        for start in range(0, queries, rows):
            images, chunk = slice(image, image + step), slice(start, start + rows)
            scores = torch.matmul(q[images, :, chunk].float() * head_dim ** -0.5, keys_t[images])
            yield images, chunk, torch.softmax(scores, dim=-1)
