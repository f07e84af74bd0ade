"""DCAL's use of a timm ``SwinTransformerBlock``: the stacked SA + PWCA streams, PWCA inside each window.

:func:`self_and_pair_window_block` composes the block's own sub-modules (``norm1``, the cyclic
shift, padding, ``window_partition``, ``attn.qkv``, the relative position bias, the shifted-window
mask, ``attn.proj``, ``window_reverse``, ``drop_path1``, ``norm2``, ``mlp``, ``drop_path2``)
exactly as timm's ``SwinTransformerBlock.forward`` does; only the keys and values of the PWCA rows differ.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse
from torch import Tensor, nn

from .attention import attention_dropout, pair_keys_and_values


def self_and_pair_window_block(
        block: nn.Module, x: Tensor, partner: Optional[Tensor] = None, partner_gradient: bool = True) -> Tensor:
    """One Swin block on the SA stream ``[B, H, W, C]``, or on ``[SA; PWCA]`` ``[2B, H, W, C]`` with ``partner``.

    In each (shifted) window, PWCA row ``b`` attends over its own keys/values of that window
    concatenated with those of SA row ``partner[b]`` in the same window at this block; both halves
    get the window's relative position bias and shifted-window mask (a partner token stands where
    row ``b``'s token at the same window position does). Without ``partner_gradient`` the partner's
    keys/values are detached.
    """
    batch, height, width, channels = x.shape
    shift = tuple(block.shift_size)
    shifted = block.norm1(x)
    if any(shift):
        shifted = torch.roll(shifted, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    pad_h = (block.window_size[0] - height % block.window_size[0]) % block.window_size[0]
    pad_w = (block.window_size[1] - width % block.window_size[1]) % block.window_size[1]
    shifted = F.pad(shifted, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = shifted.shape[1:3]
    windows = window_partition(shifted, block.window_size).view(-1, block.window_area, channels)
    mask = block.get_attn_mask(shifted) if getattr(block, 'dynamic_mask', False) else block.attn_mask
    windows = window_attention(block.attn, windows, mask, batch if partner is None else batch // 2, partner,
                               partner_gradient)
    shifted = window_reverse(windows.view(-1, *block.window_size, channels), block.window_size, padded_h, padded_w)
    out = shifted[:, :height, :width, :]
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    x = x + block.drop_path1(out)
    x = x.reshape(batch, -1, channels)
    x = x + block.drop_path2(block.mlp(block.norm2(x)))
    return x.reshape(batch, height, width, channels)


def window_attention(attn: nn.Module, windows: Tensor, mask: Optional[Tensor], num_sa: int,
                     partner: Optional[Tensor] = None, partner_gradient: bool = True) -> Tensor:
    """A timm ``WindowAttention`` on windows ``[S·nW, A, C]`` (image-major) -> ``[S·nW, A, C]``; PWCA after ``num_sa``.

    ``mask`` ``[nW, A, A]`` (0 / -100, the shifted-window mask) or None. SA windows attend as in
    timm; a PWCA window over ``2A`` keys: its own, then its partner's SA window at the same place.
    """
    count, area, channels = windows.shape
    num_windows = count // (num_sa if partner is None else 2 * num_sa)
    q, k, v = attn.qkv(windows).reshape(count, area, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    bias = attn._get_rel_pos_bias()  # [1, heads, A, A]
    if mask is not None:
        bias = bias + mask.unsqueeze(1)  # [nW, heads, A, A]
    bias = bias.expand(num_windows, attn.num_heads, area, area)
    dropout_p = attention_dropout(attn)
    sa_rows = num_sa * num_windows
    sa_bias = bias.repeat(num_sa, 1, 1, 1)
    out = F.scaled_dot_product_attention(q[:sa_rows], k[:sa_rows], v[:sa_rows], attn_mask=sa_bias, dropout_p=dropout_p)
    if partner is not None:
        partner_rows = (partner.view(-1, 1) * num_windows + torch.arange(num_windows, device=partner.device)).view(-1)
        pair_keys, pair_values = pair_keys_and_values(k, v, partner_rows, partner_gradient)
        pair_out = F.scaled_dot_product_attention(q[sa_rows:], pair_keys, pair_values,
                                                  attn_mask=torch.cat([sa_bias, sa_bias], dim=-1), dropout_p=dropout_p)
        out = torch.cat([out, pair_out])
    out = out.transpose(1, 2).reshape(count, area, -1)  # heads x head_dim, which timm lets differ from C
    return attn.proj_drop(attn.proj(out))
