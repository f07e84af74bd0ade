"""The attention SA, GLCA and PWCA share, with head split/merge around a timm ``Attention``'s weights.

The branches differ only in the query, key and value tensors they hand to :func:`attend`: SA
passes a sequence's own ``q, k, v``; GLCA passes queries gathered at the selected tokens and
keys/values of all tokens; PWCA passes keys/values of two images concatenated along the tokens.
:func:`attend_with_map` is the one place that decides how an SA block's attention map for the
rollout is obtained.
"""
import enum
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_map_kernel import softmax_with_head_mean
from .deferred_map import AttentionMap, DeferredMap, QueriesAndKeys

# ``(q, k, v, dropout_p) -> (P·v, mean_h P)``, both computed from one softmax without gradient
SoftmaxWithHeadMean = Callable[..., Tuple[Optional[Tensor], Tensor]]
HALF_PRECISION = (torch.float16, torch.bfloat16)  # mixed-precision dtypes: their maps are computed in float32


class MapRows(enum.Enum):
    """Which rows of an SA block's attention map the rollout needs."""

    ALL = 'all'  # every query row ``[B, N, N]``
    CLASS_TOKEN = 'class token'  # the class token's row ``[B, 1, N]`` (the rollout's last block)


def attend(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """``softmax(q kᵀ / √D) v`` ``[B, H, Nq, D]`` for q ``[B, H, Nq, D]``, k/v ``[B, H, Nk, D]``, by fused attention."""
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def attend_with_map(
        q: Tensor,
        k: Tensor,
        v: Tensor,
        dropout_p: float,
        rows: MapRows,
        recompute: QueriesAndKeys,
        softmax: Optional[SoftmaxWithHeadMean] = softmax_with_head_mean,
) -> Tuple[Tensor, AttentionMap]:
    """:func:`attend`'s output and the head-averaged map (``rows`` of it, before dropout, never with gradient).

    On CPU, without autograd, in float32 or float64, output and whole map come from one softmax
    (``softmax``, by default the CPU-aware kernel) and the map is a tensor ``[B, N, N]``: the
    map then costs no second ``q kᵀ``. Otherwise (another device, autograd, half precision, or
    ``softmax`` None) the output comes from fused attention, as in timm, and the map is deferred
    (:mod:`~dcal_plugin.core.deferred_map`): the rollout reads it a chunk of rows at a time, in
    float32, and no ``[B, H, N, N]`` or ``[B, N, N]`` tensor is made. A class row is deferred as
    views of its queries and keys (the rollout reads it right after this block, so they hold
    nothing across blocks); whole maps as ``recompute``, which gives the queries and keys: kept
    where autograd keeps them for the backward anyway (training without checkpointing), else
    recomputed from the tokens entering the block, which activation checkpointing keeps anyway
    (keeping ``q, k`` would keep the block's whole ``qkv`` output alive under checkpointing).
    """
    if rows is MapRows.ALL and softmax is not None and shares_softmax(q, k, v):
        return softmax(q, k, v, dropout_p)
    if rows is MapRows.CLASS_TOKEN:
        class_row = q[:, :, :1].detach(), k.detach()
        return attend(q, k, v, dropout_p), DeferredMap(lambda: class_row)
    return attend(q, k, v, dropout_p), DeferredMap(recompute)


def shares_softmax(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether an SA block's output and whole map come from one softmax: on CPU, not half precision, without
    autograd."""
    return q.device.type == 'cpu' and q.dtype not in HALF_PRECISION and not records_gradient(q, k, v)


def records_gradient(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def pair_keys_and_values(k: Tensor, v: Tensor, partner_rows: Tensor,
                         partner_gradient: bool = True) -> Tuple[Tensor, Tensor]:
    """PWCA's keys and values ``[P, H, 2N, D]``: the last P rows' own, then those of SA rows ``partner_rows [P]``.

    ``k``, ``v`` ``[S, H, N, D]`` hold the SA rows first and the P PWCA rows last (SA and PWCA streams
    stacked); without ``partner_gradient`` the partner's keys/values are detached, so PWCA sends no
    gradient into the partner's SA stream (METHOD §4).
    """
    partner_keys, partner_values = k[partner_rows], v[partner_rows]
    if not partner_gradient:
        partner_keys, partner_values = partner_keys.detach(), partner_values.detach()
    own = k.shape[0] - partner_rows.shape[0]
    return torch.cat([k[own:], partner_keys], dim=2), torch.cat([v[own:], partner_values], dim=2)


def project_qkv(attn: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[B, H, N, D]`` of tokens ``x [B, N, C]`` with a timm ``Attention``'s weights."""
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def project_q(attn: nn.Module, x: Tensor) -> Tensor:
    """Queries ``[B, H, Nq, D]`` of tokens ``x [B, Nq, C]``: only the query third of ``qkv`` is applied."""
    return attn.q_norm(_project(attn, x, 0, 1)[0])


def project_qk(attn: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Queries and keys ``[B, H, N, D]`` of tokens ``x [B, N, C]``: the value third of ``qkv`` is skipped."""
    q, k = _project(attn, x, 0, 2)
    return attn.q_norm(q), attn.k_norm(k)


def project_kv(attn: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Keys and values ``[B, H, N, D]`` of tokens ``x [B, N, C]``: the query third of ``qkv`` is skipped."""
    k, v = _project(attn, x, 1, 3)
    return attn.k_norm(k), v


def merge_heads(attn: nn.Module, out: Tensor) -> Tensor:
    """Attention output ``[B, H, Nq, D]`` -> ``[B, Nq, C]`` through the timm ``Attention``'s output projection."""
    batch, heads, tokens, head_dim = out.shape
    out = attn.norm(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
    return attn.proj_drop(attn.proj(out))


def attention_dropout(attn: nn.Module) -> float:
    """The dropout probability on attention weights that a timm ``Attention`` applies in train mode."""
    return attn.attn_drop.p if attn.training else 0.0


def _project(attn: nn.Module, x: Tensor, first: int, stop: int) -> Tuple[Tensor, ...]:
    """Thirds ``first..stop-1`` of ``qkv`` (0 queries, 1 keys, 2 values) of tokens ``x [B, N, C]``, each
    ``[B, H, N, D]``."""
    width = attn.num_heads * attn.head_dim
    rows = slice(first * width, stop * width)
    bias = None if attn.qkv.bias is None else attn.qkv.bias[rows]
    parts = F.linear(x, attn.qkv.weight[rows], bias).chunk(stop - first, dim=-1)
    return tuple(split_heads(part, attn.num_heads) for part in parts)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, N, H·D]`` -> ``[B, H, N, D]``."""
    batch, tokens, width = x.shape
    return x.reshape(batch, tokens, num_heads, width // num_heads).transpose(1, 2)
