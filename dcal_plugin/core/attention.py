"""The attention SA, GLCA and PWCA share, with head split/merge around a timm ``Attention``'s weights.

The branches differ only in the query, key and value tensors they hand to :func:`attend`: SA
passes a sequence's own ``q, k, v``; GLCA passes queries gathered at the selected tokens and
keys/values of all tokens; PWCA passes keys/values of two images concatenated along the tokens.
:func:`attend_with_map` is the one place that decides how an SA block's attention map for the
rollout is obtained.
"""
import enum
import functools
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_map_kernel import softmax_with_head_mean

# ``(q, k, v, dropout_p) -> (P·v, mean_h P)``, both computed from one softmax without gradient
SoftmaxWithHeadMean = Callable[..., Tuple[Optional[Tensor], Tensor]]
# a block's head-averaged map ``[B, Nq, N]``, or a function that computes it when the rollout reads it
AttentionMap = Union[Tensor, Callable[[], Tensor]]
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
        softmax: SoftmaxWithHeadMean = softmax_with_head_mean,
) -> Tuple[Tensor, AttentionMap]:
    """:func:`attend`'s output and the head-averaged map (``rows`` of it, before dropout, never with gradient).

    Without autograd, output and map come from one softmax (``softmax``, by default the CPU-aware
    kernel) and the map is a tensor ``[B, N, N]``. When autograd records the call, or only the
    class token's row is wanted, the output comes from fused attention and the map is a function
    that computes it from the detached queries and keys (which the backward pass keeps anyway)
    when the rollout reads it: training holds no ``[B, N, N]`` map per block, and the class row
    ``[B, 1, N]`` costs one row of scores. Under mixed precision (float16 or bfloat16 queries)
    the output is fused attention's too, as in timm, and the map is computed in float32 with
    autocast off, so that the rollout's top-R does not rest on half-precision probabilities.
    """
    if rows is MapRows.ALL and not records_gradient(q, k, v) and q.dtype not in HALF_PRECISION:
        return softmax(q, k, v, dropout_p)
    map_queries = q[:, :, :1] if rows is MapRows.CLASS_TOKEN else q
    read_map = functools.partial(_head_mean_only, softmax, map_queries.detach(), k.detach())
    return attend(q, k, v, dropout_p), read_map


def read_map(attention_map: AttentionMap) -> Tensor:
    """A map as a tensor: computed now if :func:`attend_with_map` gave it as a function."""
    return attention_map if isinstance(attention_map, Tensor) else attention_map()


def records_gradient(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


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


def _head_mean_only(softmax: SoftmaxWithHeadMean, q: Tensor, k: Tensor) -> Tensor:
    """The head-averaged map ``[B, Nq, Nk]`` of ``softmax`` without ``P·v``; half precision computed in float32, autocast off."""
    with torch.autocast(q.device.type, enabled=False):
        return softmax(_at_least_float32(q), _at_least_float32(k))[1]


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16 or bfloat16, else unchanged."""
    return x.float() if x.dtype in HALF_PRECISION else x


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, N, H·D]`` -> ``[B, H, N, D]``."""
    batch, tokens, width = x.shape
    return x.reshape(batch, tokens, num_heads, width // num_heads).transpose(1, 2)
