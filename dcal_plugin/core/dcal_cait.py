"""DCAL on timm's CaiT: SA, GLCA and PWCA branches (Zhu et al., CVPR 2022; the supplementary's CaiT-XS24 row)."""
import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.models.cait import Cait
from torch import Tensor, nn

from .attention import pair_keys_and_values, split_heads
from .dcal_model import ROLLOUT_LABEL, DCALModel, pwca_partner
from .output import DCALOutput
from .rollout import apply_residual_map, class_row_of_residual_map, random_local_queries, select_local_queries


class DCALCaiT(DCALModel):
    """Dual Cross-Attention Learning around timm's ``Cait`` (`paper <https://arxiv.org/abs/2205.02151>`_).

    ``vit`` is the SA branch (timm's parameter names) and computes timm's CaiT: the talking-heads
    blocks ``vit.blocks`` on the P patch tokens, then the class-attention blocks
    ``vit.blocks_token_only`` where the class token alone attends over ``[class; patches]``, then
    ``norm`` and ``head``. PWCA (train mode only) shares every weight with SA: an image's PWCA
    stream attends, at every talking-heads and class-attention block, over its own keys/values
    concatenated with its distractor's SA keys/values at that block (talking heads: logits
    ``[B, H, P, 2P]``, ``proj_l`` over heads, softmax over the 2P keys, ``proj_w``, times the 2P
    values). ``proj_w`` mixes the heads' distributions and adds its bias to every weight, i.e.
    ``b·Σ_j v_j`` over the keys; over the 2P keys of PWCA that bias is scaled by ``P / 2P`` [ours: so
    the bias carries the mass it had over the P keys the block was trained with, and a partner
    identical to the image gives SA's output, as softmax attention over the pair does].

    Rollout [ours]: the paper scores patches by the class token's accumulated attention through the
    blocks up to GLCA's (METHOD §2). In CaiT the class token exists only in the class-attention
    blocks, so its path runs through them (last first: its row ``(1-α)·a + α·e₀`` over
    ``[class; patches]``, ``a`` the head-mean attention; identity rows for the patches, which these
    blocks leave unchanged), then, along the patches, through the talking-heads blocks' maps
    ``S̄_l = (1-α)·mean_h(A_l) + α·I`` (last first, rows re-normalised); the share left on the class
    token at the input is dropped: it is a learned parameter, no image region. ``A_l`` are the
    softmax probabilities (after ``proj_l``, before ``proj_w``) [ours: ``proj_w``'s mixed weights
    can be negative and their rows need not sum to 1, so they are no distribution to roll out].
    The maps are kept as ``[B, P, P]`` float32 per talking-heads block while the forward runs.

    GLCA [ours]: the paper runs GLCA beside the last block on the tokens entering it, its R local
    queries attending over all tokens, a block initialised from a copy of that block. CaiT's last
    block is a class-attention block, which already has that form (one query over all tokens), so
    GLCA is a copy of the last class-attention block whose queries are the R selected patch tokens
    (as they leave the talking-heads stack) instead of the class token; its keys/values are the SA
    class token entering that block and all patches. Its R outputs are averaged, then go to GLCA's
    own norm and classifier (copies of SA's). The rollout includes that block's class row, as the
    paper's rollout through blocks 1..i counts block i's own attention.

    Args:
        vit (Cait): a timm CaiT with token pooling, e.g. ``cait_xs24_384``.
        local_query_ratio (float): R as a fraction of the patches, in (0, 1]. Defaults to 0.1.
        residual_weight (float): α of the rollout's residual maps. Defaults to 0.5.
        sa_only_inference (bool): in eval mode, run SA only, no GLCA or rollout. Defaults to False.
        use_glca (bool): build and run the GLCA branch. Defaults to True.
        use_pwca (bool): run the PWCA branch in train mode. Defaults to True. With both off the
            model is timm's CaiT.
        query_selection (str): ``'rollout'`` (top-R of the rollout) or ``'random'`` (R patches drawn
            uniformly per image and call, no rollout). Defaults to ``'rollout'``.
        pwca_partner_gradient (bool): whether the PWCA loss sends gradient into the distractor's SA
            stream through its keys and values; False detaches them. Defaults to True.
        grad_checkpointing (bool): activation checkpointing of every block of every stream, timm's
            ``set_grad_checkpointing``. Defaults to False.
    """

    def __init__(
            self,
            vit: Cait,
            local_query_ratio: float = 0.1,
            residual_weight: float = 0.5,
            sa_only_inference: bool = False,
            use_glca: bool = True,
            use_pwca: bool = True,
            query_selection: str = 'rollout',
            pwca_partner_gradient: bool = True,
            grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _check_backbone(vit)
        self._keep_options(vit, locals())
        if use_glca:
            self.glca_block = copy.deepcopy(vit.blocks_token_only[-1])
            self.glca_norm = copy.deepcopy(vit.norm)
            self.glca_head = copy.deepcopy(vit.head)

    def _copy_sa_into_glca(self) -> None:
        """Set GLCA's block, norm and classifier to copies of SA's last class-attention block, norm and classifier."""
        if not self.use_glca:
            return
        self.glca_block.load_state_dict(self.vit.blocks_token_only[-1].state_dict())
        self.glca_norm.load_state_dict(self.vit.norm.state_dict())
        self.glca_head.load_state_dict(self.vit.head.state_dict())

    def forward(self, x: Tensor, distractor_index: Optional[Tensor] = None) -> DCALOutput:
        """Images ``[B, 3, H, W]`` -> :class:`DCALOutput`; ``distractor_index [B]``: PWCA partners (train mode)."""
        batch = x.shape[0]
        partner = pwca_partner(batch, distractor_index, x.device) if self.training and self.use_pwca else None
        run_glca = self.use_glca and (self.training or not self.sa_only_inference)
        tokens = self._embed(x)
        patches, maps = self._talking_heads(tokens if partner is None else torch.cat([tokens, tokens]), partner,
                                            with_maps=run_glca and self.query_selection == 'rollout')
        class_token, last_entering, class_rows = self._class_attention(patches, partner)
        sa_feature, sa_logits = self._sa_head(class_token[:batch])
        pwca_feature, pwca_logits = (None, None) if partner is None else self._sa_head(class_token[batch:])
        glca_feature = glca_logits = local_query_index = None
        if run_glca:
            local_query_index = self._local_queries(class_rows, maps, batch, x.device)
            glca_feature, glca_logits = self._glca(patches[:batch], last_entering[:batch], local_query_index)
        return DCALOutput(
            sa_feature=sa_feature, glca_feature=glca_feature, pwca_feature=pwca_feature, sa_logits=sa_logits,
            glca_logits=glca_logits, pwca_logits=pwca_logits, local_query_index=local_query_index)

    @torch.no_grad()
    def rollout_map(self, x: Tensor) -> Tensor:
        """The class token's rollout (see the class docstring) on the patch grid ``[B, h, w]``, for heat-maps."""
        patches, maps = self._talking_heads(self._embed(x), None, with_maps=True)
        class_rows = self._class_attention(patches, None)[2]
        scores = class_attention_rollout(class_rows, maps, self.residual_weight)
        return scores.reshape(x.shape[0], *self.vit.patch_embed.grid_size)

    def _embed(self, x: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> patch tokens ``[B, P, C]`` plus position embedding (no class token yet)."""
        vit, expected = self.vit, tuple(self.vit.patch_embed.img_size)
        if x.dim() != 4 or tuple(x.shape[-2:]) != expected:
            raise ValueError(f'DCALCaiT expects images [B, C, {expected[0]}, {expected[1]}], got {tuple(x.shape)}; '
                             f'build the model with img_size={tuple(x.shape[-2:])} to use this size '
                             '(a checkpoint\'s position embeddings are resized on load)')
        x = x.to(vit.patch_embed.proj.weight.dtype)
        return vit.pos_drop(vit.patch_embed(x) + vit.pos_embed)

    def _talking_heads(self, stream: Tensor, partner: Optional[Tensor], with_maps: bool) -> Tuple[Tensor, List[Tensor]]:
        """Patch stream ``[B', P, C]`` through ``vit.blocks`` -> stream, and SA maps ``[B, P, P]`` if ``with_maps``."""
        maps = []
        for block in self.vit.blocks:
            stream, attention_map = self._checkpointed(
                talking_heads_block, block, stream, partner=partner, partner_gradient=self.pwca_partner_gradient,
                with_map=with_maps)
            if attention_map is not None:
                maps.append(attention_map)
        return stream, maps

    def _class_attention(self, patches: Tensor, partner: Optional[Tensor]) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """Patches ``[B', P, C]`` -> class token ``[B', 1, C]`` (final, entering the last block), SA rows ``[B, N]``."""
        class_token, class_rows = self.vit.cls_token.expand(patches.shape[0], -1, -1), []
        for block in self.vit.blocks_token_only:
            entering = class_token
            class_token, class_row = self._checkpointed(
                class_attention_block, block, class_token, torch.cat([class_token, patches], dim=1), partner=partner,
                partner_gradient=self.pwca_partner_gradient)
            class_rows.append(class_row[:, 0])
        return class_token, entering, class_rows

    def _local_queries(self, class_rows: Sequence[Tensor], maps: Sequence[Tensor], batch: int,
                       device: torch.device) -> Tensor:
        """GLCA's R patch positions ``[B, R]``: the top-R of the rollout, or drawn at random."""
        if self.query_selection == 'random':
            return random_local_queries(batch, self.vit.patch_embed.num_patches, self.local_query_ratio, device)
        with torch.profiler.record_function(ROLLOUT_LABEL):
            scores = class_attention_rollout(class_rows, maps, self.residual_weight)
            return select_local_queries(scores, self.local_query_ratio)

    def _glca(self, patches: Tensor, class_token: Tensor, local_index: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Patches ``[B, P, C]``, SA class token entering the last block ``[B, 1, C]``, queries ``[B, R]`` -> GLCA."""
        queries = patches.gather(1, local_index.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        out, _ = self._checkpointed(class_attention_block, self.glca_block, queries,
                                    torch.cat([class_token, patches], dim=1))
        feature = self.glca_norm(out.mean(dim=1))
        return feature, self._classify(self.glca_head, feature)

    def _sa_head(self, class_token: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Final class token ``[B, 1, C]`` -> feature ``[B, C]`` and logits ``[B, K]``, by timm's norm and head."""
        feature = self.vit.forward_head(self.vit.norm(class_token), pre_logits=True)
        return feature, self._classify(self.vit.head, feature)


def talking_heads_block(block: nn.Module, x: Tensor, partner: Optional[Tensor] = None, partner_gradient: bool = True,
                        with_map: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """A ``LayerScaleBlock`` on SA patches ``[B, P, C]``, or ``[SA; PWCA]`` ``[2B, P, C]`` with ``partner [B]``.

    Returns the new stream and, ``with_map``, the SA rows' head-mean softmax map ``[B, P, P]``
    (float32, no gradient). PWCA row ``b`` attends over its own keys/values and SA row ``partner[b]``'s.
    """
    attn = block.attn
    batch, tokens, width = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, width // attn.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    num_sa = batch if partner is None else batch // 2
    out, probs = _talking_heads_attention(attn, q[:num_sa], k[:num_sa], v[:num_sa])
    if partner is not None:
        pair_k, pair_v = pair_keys_and_values(k, v, partner, partner_gradient)
        out = torch.cat([out, _talking_heads_attention(attn, q[num_sa:], pair_k, pair_v, own_keys=tokens)[0]])
    x = x + block.drop_path(block.gamma_1 * out)
    x = x + block.drop_path(block.gamma_2 * block.mlp(block.norm2(x)))
    return x, (_head_mean(probs) if with_map else None)


def class_attention_block(block: nn.Module, queries: Tensor, context: Tensor, partner: Optional[Tensor] = None,
                          partner_gradient: bool = True) -> Tuple[Tensor, Tensor]:
    """A ``LayerScaleBlockClassAttn``: tokens ``queries [B', Nq, C]`` attend over ``context [B', N, C]``.

    SA: the class token over ``[class; patches]``; GLCA: the R local patches over the same. With
    ``partner [B]`` the rows are ``[SA; PWCA]`` (``B' = 2B``) and PWCA row ``b`` attends over its
    own context and SA row ``partner[b]``'s. Returns the queries' new tokens ``[B', Nq, C]`` and
    the SA rows' head-mean attention ``[B, Nq, N]`` (float32, no gradient).
    """
    attn, normed = block.attn, block.norm1(context)
    q = split_heads(attn.q(block.norm1(queries)), attn.num_heads)
    k, v = split_heads(attn.k(normed), attn.num_heads), split_heads(attn.v(normed), attn.num_heads)
    num_sa = queries.shape[0] if partner is None else queries.shape[0] // 2
    out, probs = _softmax_attention(attn, q[:num_sa], k[:num_sa], v[:num_sa])
    if partner is not None:
        pair_k, pair_v = pair_keys_and_values(k, v, partner, partner_gradient)
        out = torch.cat([out, _softmax_attention(attn, q[num_sa:], pair_k, pair_v)[0]])
    y = queries + block.drop_path(block.gamma_1 * out)
    return y + block.drop_path(block.gamma_2 * block.mlp(block.norm2(y))), _head_mean(probs)


@torch.no_grad()
def class_attention_rollout(class_rows: Sequence[Tensor], patch_maps: Sequence[Tensor],
                            residual_weight: float = 0.5) -> Tensor:
    """Patch scores ``[B, P]``: ``e₀ᵀ S̄_CAk ⋯ S̄_CA1`` over ``[class; patches]``, its patch part times ``S̄_L ⋯ S̄_1``.

    ``class_rows``: each class-attention block's head-mean class row ``[B, 1+P]``, first block
    first; ``S̄_CA`` has row 0 ``rownorm((1-α)·a + α·e₀)`` and identity rows for the patches.
    ``patch_maps``: each talking-heads block's head-mean map ``[B, P, P]``, first block first;
    ``S̄_l = rownorm((1-α)·A_l + α·I)``. A vector–matrix chain in float32, autocast off.
    """
    alpha = residual_weight
    with torch.autocast(class_rows[-1].device.type, enabled=False):
        row = torch.zeros_like(class_rows[-1], dtype=torch.float32)
        row[:, 0] = 1.0  # e₀: the final class token
        for class_row in reversed(class_rows):  # the patches' share passes these blocks unchanged (identity rows)
            row = row[:, :1] * class_row_of_residual_map(class_row.float(), alpha) + F.pad(row[:, 1:], (1, 0))
        patches = row[:, 1:]
        for attention in reversed(patch_maps):
            patches = apply_residual_map(patches, attention, alpha, rows_sum_to_one=False)
    return patches


def _talking_heads_attention(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor,
                             own_keys: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """``TalkingHeadAttn``: q ``[B, H, Nq, D]``, k/v ``[B, H, Nk, D]`` -> ``[B, Nq, C]``, softmax ``[B, H, Nq, Nk]``.

    ``proj_w``'s bias is scaled by ``own_keys / Nk`` (PWCA's pair of images; 1, timm's, by default).
    """
    logits = attn.proj_l(((q * attn.scale) @ k.transpose(-2, -1)).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    probs = logits.softmax(dim=-1)
    bias = attn.proj_w.bias
    if own_keys is not None and bias is not None:
        bias = bias * (own_keys / k.shape[2])
    weights = attn.attn_drop(F.linear(probs.permute(0, 2, 3, 1), attn.proj_w.weight, bias).permute(0, 3, 1, 2))
    out = (weights @ v).transpose(1, 2).flatten(2)
    return attn.proj_drop(attn.proj(out)), probs


def _softmax_attention(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    """``ClassAttn``: q ``[B, H, Nq, D]``, k/v ``[B, H, Nk, D]`` -> ``[B, Nq, C]``, softmax ``[B, H, Nq, Nk]``."""
    probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).flatten(2)
    return attn.proj_drop(attn.proj(out)), probs


def _head_mean(probs: Tensor) -> Tensor:
    """Softmax probabilities ``[B, H, Nq, Nk]`` -> their head mean ``[B, Nq, Nk]``, float32, without gradient."""
    return probs.detach().float().mean(dim=1)


def _check_backbone(vit: nn.Module) -> None:
    """Raise a clear error for a CaiT DCAL cannot run on."""
    if not isinstance(vit, Cait):
        raise ValueError(f'DCALCaiT needs a timm Cait (e.g. cait_xs24_384), got {type(vit).__name__}')
    if vit.global_pool != 'token' or vit.cls_token is None or not vit.blocks_token_only:
        raise ValueError('DCALCaiT classifies the class token of the class-attention blocks: it needs '
                         f'global_pool="token" (got {vit.global_pool!r}) and class-attention blocks '
                         f'(got {0 if vit.blocks_token_only is None else len(vit.blocks_token_only)})')
