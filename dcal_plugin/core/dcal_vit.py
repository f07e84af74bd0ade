"""DCAL on a timm Vision Transformer: SA, GLCA and PWCA branches (Zhu et al., CVPR 2022, arXiv 2205.02151)."""
import copy
from typing import List, Optional, Sequence, Tuple

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .attention import MapRows
from .attention_map_kernel import softmax_with_head_mean
from .blocks import global_local_cross_attention_block, self_and_pair_attention_block
from .dcal_model import ROLLOUT_LABEL, DCALModel, pwca_partner
from .deferred_map import AttentionMap, read_map
from .forward_plan import ForwardPlan
from .output import DCALOutput
from .rollout import class_token_rollout, random_local_queries, select_local_queries


class DCALViT(DCALModel):
    """Dual Cross-Attention Learning around a timm ``VisionTransformer`` (`paper <https://arxiv.org/abs/2205.02151>`_).

    ``vit`` is the SA branch and keeps timm's parameter names (``vit.blocks.3.attn.qkv.weight``);
    its blocks compute exactly timm's math. GLCA is one block in parallel with SA block
    ``glca_block_index``, with its own weights initialised as copies of that block, of the final
    norm and of the classifier; its queries are the R patch tokens with the highest class-token
    attention rollout through blocks ``0..glca_block_index`` (METHOD §2–3), its keys and values
    all N tokens entering that block. The R outputs are averaged, then go to GLCA's own norm and
    classifier [ours: the paper does not say how the R outputs are reduced; also when the block is
    not the last]. PWCA (train mode only) shares every weight with SA: at each block, an image's
    PWCA tokens attend over its own keys/values concatenated with its distractor's SA keys/values
    at that block (METHOD §4); the distractor is drawn uniformly among the permutations of the
    batch without fixed points [ours].

    The arguments after ``vit`` are DCAL's options, defined here once (:meth:`option_defaults`):
    the MMPretrain backbone and the torchreid model and yaml config take them by these names.
    ``softmax_with_head_mean`` (an attribute, not an option) computes the maps the rollout reads
    together with their blocks' outputs where that pays (CPU, float32, no autograd); benchmarks
    replace it per model, as timm's ``fused_attn``; None defers every map, as off CPU.

    Args:
        vit (VisionTransformer): a timm ViT/DeiT/hybrid with one class token and token pooling.
        local_query_ratio (float): R as a fraction of the patches, in (0, 1]. Defaults to 0.1
            (the paper's FGVC value; 0.3 for Re-ID).
        glca_block_index (int): the SA block GLCA runs beside (negative counts from the end).
            Defaults to -1, the last block.
        residual_weight (float): weight of the identity in the rollout's ``S̄ = (1-α)·S + α·I``.
            Defaults to 0.5.
        sa_only_inference (bool): in eval mode, run timm's own SA forward only and skip GLCA and
            the rollout [ours, the paper's "drop GLCA at inference" setting]. Defaults to False.
        use_glca (bool): build and run the GLCA branch. Defaults to True.
        use_pwca (bool): run the PWCA branch in train mode. Defaults to True. With both switched
            off the model is timm's plain ViT (the ablation's SA-only baseline, METHOD §8).
        query_selection (str): how GLCA picks its R local queries, in train and eval mode:
            ``'rollout'`` (the top-R of the rollout, the method) or ``'random'`` (R patches drawn
            uniformly at random per image and call, the paper's "random queries" ablation; no
            rollout is computed). Defaults to ``'rollout'``.
        pwca_partner_gradient (bool): whether the PWCA loss sends gradient into the distractor's SA
            stream through its keys and values [ours: the paper names no stop-gradient, so by
            default the gradient flows as the plain computation has it]. False detaches them.
            Defaults to True.
        grad_checkpointing (bool): activation checkpointing of every block of every stream (SA,
            PWCA, GLCA) while autograd records: each block's activations are recomputed in the
            backward pass instead of kept. The same switch as timm's
            ``vit.set_grad_checkpointing()``, which it sets. Defaults to False.
    """

    def __init__(
            self,
            vit: VisionTransformer,
            local_query_ratio: float = 0.1,
            glca_block_index: int = -1,
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
        depth = len(vit.blocks)
        if not -depth <= glca_block_index < depth:
            raise ValueError(f'glca_block_index must lie in [{-depth}, {depth - 1}], got {glca_block_index}')
        self._keep_options(vit, locals())
        self.glca_block_index = glca_block_index % depth
        self.softmax_with_head_mean = softmax_with_head_mean
        if use_glca:
            self.glca_block = copy.deepcopy(vit.blocks[self.glca_block_index])
            self.glca_norm = copy.deepcopy(vit.norm)
            self.glca_head = copy.deepcopy(vit.head)

    def _copy_sa_into_glca(self) -> None:
        """Set GLCA's block, norm and classifier to copies of SA block ``glca_block_index``, SA's norm and
        classifier."""
        if not self.use_glca:
            return
        self.glca_block.load_state_dict(self.vit.blocks[self.glca_block_index].state_dict())
        self.glca_norm.load_state_dict(self.vit.norm.state_dict())
        self.glca_head.load_state_dict(self.vit.head.state_dict())

    @property
    def grid_size(self) -> Tuple[int, int]:
        """Patch grid ``(h, w)`` of the input size the model was built for."""
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token (first), then registers or a distillation token, if any."""
        return self.vit.num_prefix_tokens

    @property
    def patch_stride(self) -> Tuple[int, int]:
        """Pixels per token ``(h, w)``: the patch size (times the CNN's reduction of a hybrid)."""
        return _patch_stride(self.vit.patch_embed)

    def patch_grid(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid ``(h, w)`` of images of ``image_size`` ``(H, W)`` (any multiple of the stride, with
        ``dynamic_img_size``)."""
        return image_size[0] // self.patch_stride[0], image_size[1] // self.patch_stride[1]

    def forward(self, x: Tensor, distractor_index: Optional[Tensor] = None) -> DCALOutput:
        """Images ``[B, 3, H, W]`` -> :class:`DCALOutput`; ``distractor_index [B]`` is each image's PWCA partner (train
        mode)."""
        tokens = self._embed(x)
        plan = self.plan(x.shape[0], distractor_index, x.device)
        glca_feature = glca_logits = local_query_index = None
        if plan.is_plain_vit:
            stream = tokens
            for block in self.vit.blocks:
                stream = self._checkpointed(block, stream)
        else:
            stream, maps = plan.stack(tokens), []
            for index, block in enumerate(self.vit.blocks):
                glca_input = plan.split(stream)[0] if index == plan.glca_block else None  # the tokens entering it
                stream, attention_map = self._checkpointed(
                    self_and_pair_attention_block, block, stream, partner=plan.partner, map_rows=plan.map_rows(index),
                    partner_gradient=self.pwca_partner_gradient, softmax=self.softmax_with_head_mean,
                    keep_queries_and_keys=not self.grad_checkpointing)
                if attention_map is not None:
                    maps.append(attention_map)
                if glca_input is not None:
                    glca_feature, glca_logits, local_query_index = self._glca(glca_input, maps)
                    maps.clear()  # what the maps hold is not needed past GLCA's block
        sa_tokens, pwca_tokens = plan.split(stream)
        sa_feature, sa_logits = self._sa_head(sa_tokens)
        pwca_feature, pwca_logits = (None, None) if pwca_tokens is None else self._sa_head(pwca_tokens)
        return DCALOutput(
            sa_feature=sa_feature, glca_feature=glca_feature, pwca_feature=pwca_feature, sa_logits=sa_logits,
            glca_logits=glca_logits, pwca_logits=pwca_logits, local_query_index=local_query_index)

    def plan(self, batch: int, distractor_index: Optional[Tensor] = None,
             device: Optional[torch.device] = None) -> ForwardPlan:
        """What a forward call on ``batch`` images runs in the current mode (see :class:`ForwardPlan`)."""
        partner = pwca_partner(batch, distractor_index, device) if self.training and self.use_pwca else None
        if not self.use_glca or (self.sa_only_inference and not self.training):
            return ForwardPlan(partner=partner)
        rollout_blocks = self.glca_block_index + 1 if self.query_selection == 'rollout' else 0
        return ForwardPlan(partner=partner, glca_block=self.glca_block_index, rollout_blocks=rollout_blocks)

    @torch.no_grad()
    def attention_maps(self, x: Tensor, num_blocks: Optional[int] = None) -> List[Tensor]:
        """Head-averaged SA attention maps ``[B, N, N]`` of the first ``num_blocks`` blocks (default all), no gradient.

        Tensors in every precision: under bfloat16 or float16 (autocast or a cast model) the maps
        are float32, computed from the half-precision queries and keys as the rollout reads them.
        """
        stream, maps = self._embed(x), []
        for block in self.vit.blocks[:num_blocks]:
            stream, attention_map = self_and_pair_attention_block(
                block, stream, map_rows=MapRows.ALL, softmax=self.softmax_with_head_mean)
            maps.append(read_map(attention_map))
        return maps

    @torch.no_grad()
    def rollout_map(self, x: Tensor) -> Tensor:
        """Class-token rollout through blocks ``0..glca_block_index`` on the patch grid ``[B, h, w]`` (for
        heat-maps)."""
        maps = self.attention_maps(x, self.glca_block_index + 1)
        scores = class_token_rollout(maps, self.residual_weight, rows_sum_to_one=True,
                                     num_prefix_tokens=self.num_prefix_tokens)
        return scores.reshape(x.shape[0], *self.patch_grid(tuple(x.shape[-2:])))

    def _embed(self, x: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> tokens ``[B, N, C]`` (patch embedding, class token, position embedding).

        Images are cast to the patch embedding's dtype, so a model cast to bfloat16 takes the float32
        batches of mmpretrain's data preprocessor and torchreid's ``FeatureExtractor``.
        """
        vit = self.vit
        expected = tuple(vit.patch_embed.img_size)
        if vit.dynamic_img_size:
            stride = self.patch_stride
            if x.dim() != 4 or x.shape[-2] % stride[0] or x.shape[-1] % stride[1]:
                raise ValueError(f'DCALViT (dynamic_img_size) expects images [B, C, H, W] with H, W multiples of '
                                 f'{stride[0]}x{stride[1]} patches, got {tuple(x.shape)}')
        elif x.dim() != 4 or tuple(x.shape[-2:]) != expected:
            raise ValueError(f'DCALViT expects images [B, C, {expected[0]}, {expected[1]}], got {tuple(x.shape)}; '
                             f'build the model with img_size={tuple(x.shape[-2:])} to use this size '
                             '(a checkpoint\'s position embeddings are resized on load), or with '
                             'dynamic_img_size=True to take any size')
        x = x.to(vit.patch_embed.proj.weight.dtype)
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))

    def _glca(self, tokens: Tensor, maps: Sequence[AttentionMap]) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """GLCA on the tokens entering its block ``[B, N, C]`` -> feature ``[B, C]``, logits, local queries ``[B, R]``.

        ``maps``: the SA blocks' head-averaged attention maps up to GLCA's block (empty with random
        queries), as :func:`~dcal_plugin.core.attention.attend_with_map` gives them. The feature
        is GLCA's norm of the mean of its R outputs.
        """
        prefix = self.num_prefix_tokens
        if self.query_selection == 'random':
            local_index = random_local_queries(
                tokens.shape[0], tokens.shape[1] - prefix, self.local_query_ratio, tokens.device)
        else:
            with torch.profiler.record_function(ROLLOUT_LABEL):
                scores = class_token_rollout(maps, self.residual_weight, rows_sum_to_one=True,
                                             num_prefix_tokens=prefix)
                local_index = select_local_queries(scores, self.local_query_ratio)
        out = self._checkpointed(global_local_cross_attention_block, self.glca_block, tokens,
                                 local_index + prefix)  # patches only: never the class token, registers or others
        feature = self.glca_norm(out.mean(dim=1))
        return feature, self._classify(self.glca_head, feature), local_index

    def _sa_head(self, tokens: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Block output ``[B, N, C]`` -> SA feature ``[B, C]`` and logits ``[B, K]``, by timm's own head.

        The feature is the normed class token; a distilled DeiT's is the mean of its normed class and
        distillation tokens, and its logits the mean of its two classifiers' (timm's inference).
        """
        normed = self.vit.norm(tokens)
        feature = self.vit.forward_head(normed, pre_logits=True)
        return feature, (self.vit.forward_head(normed) if self.vit.num_classes > 0 else None)

def _check_backbone(vit: nn.Module) -> None:
    """Raise a clear error for a timm model DCAL cannot run on."""
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f'DCAL needs a timm VisionTransformer (ViT, DeiT, R50+ViT hybrid), got {type(vit).__name__}')
    if vit.cls_token is None or vit.global_pool != 'token':
        raise ValueError('DCAL needs a class token and token pooling (the class token first, registers or a '
                         f'distillation token may follow): cls_token={vit.cls_token is not None}, '
                         f'global_pool={vit.global_pool!r}')
    if not isinstance(vit.fc_norm, nn.Identity) or vit.attn_pool is not None:
        raise ValueError('DCAL classifies the normed class token: models with fc_norm or attention pooling are '
                         'not supported')
    img_size, stride = tuple(vit.patch_embed.img_size), _patch_stride(vit.patch_embed)
    if any(size % step for size, step in zip(img_size, stride)):
        raise ValueError(f'img_size {img_size} does not fit the patch grid: {vit.pretrained_cfg["architecture"]} '
                         f'cuts images into {stride[0]}x{stride[1]} patches, so use multiples of them, e.g. '
                         f'{tuple(size // step * step for size, step in zip(img_size, stride))}')
    if any(getattr(block.attn, 'gate', None) is not None for block in vit.blocks):
        raise ValueError('gated attention is not supported')


def _patch_stride(patch_embed: nn.Module) -> Tuple[int, int]:
    """Pixels per token along (H, W): the patch size, times the CNN's reduction for a hybrid embedding."""
    stride = tuple(patch_embed.patch_size)
    feature_info = getattr(getattr(patch_embed, 'backbone', None), 'feature_info', None)
    if feature_info:
        reduction = feature_info[-1]['reduction']
        stride = (stride[0] * reduction, stride[1] * reduction)
    return stride
