"""DCAL on a timm Swin Transformer as the paper ran it: SA and PWCA, no GLCA (METHOD §9, the supplementary's Swin-T)."""
from typing import Optional, Tuple

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import Tensor

from .dcal_model import DCALModel, pwca_partner
from .output import DCALOutput
from .window_blocks import self_and_pair_window_block


class DCALSwin(DCALModel):
    """PWCA-only DCAL around a timm ``SwinTransformer`` (the paper's Swin-T: "its windows already give locality").

    ``vit`` is the SA branch (timm's parameter names) and computes timm's own forward; there is no
    GLCA and no rollout (the paper runs PWCA alone on Swin-T). PWCA (train mode only) shares every
    weight with SA: at every block of every stage, inside each (shifted) window, the PWCA queries of
    an image attend over that window's keys/values of the image's PWCA stream concatenated with the
    same window's keys/values of its distractor's SA stream at that block; the relative position
    bias and the shifted-window mask apply to both halves alike [ours: the paper says only that
    PWCA runs in the windows; a distractor token stands where the image's token at the same window
    position does] (:func:`~dcal_plugin.core.window_blocks.self_and_pair_window_block`). Patch
    merging, norms and MLPs act on each stream alone. The feature of SA and PWCA is timm's pooled
    feature (the average of the final normed tokens); the distractor is drawn as for ``DCALViT``.

    Args:
        vit (SwinTransformer): a timm Swin Transformer (v1), e.g. ``swin_tiny_patch4_window7_224``.
        use_pwca (bool): run the PWCA branch in train mode. Defaults to True; False is timm's Swin.
        pwca_partner_gradient (bool): whether the PWCA loss sends gradient into the distractor's SA
            stream through its keys and values (as ``DCALViT``'s). Defaults to True.
        grad_checkpointing (bool): activation checkpointing of every block of both streams, timm's
            ``set_grad_checkpointing``. Defaults to False.
    """

    def __init__(
            self,
            vit: SwinTransformer,
            use_pwca: bool = True,
            pwca_partner_gradient: bool = True,
            grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(vit, SwinTransformer):
            raise ValueError(f'DCALSwin needs a timm SwinTransformer, got {type(vit).__name__}')
        if vit.head.global_pool.pool_type != 'avg':
            raise ValueError(f'DCALSwin classifies the averaged tokens: global_pool must be "avg", got '
                             f'{vit.head.global_pool.pool_type!r}')
        self._keep_options(vit, locals())

    @property
    def grad_checkpointing(self) -> bool:
        """Whether blocks recompute their activations in the backward pass (timm's flag on each stage)."""
        return self.vit.layers[0].grad_checkpointing

    @property
    def patch_stride(self) -> Tuple[int, int]:
        """Pixels per final token ``(h, w)``: the patch size times the patch mergings' reduction (32 for Swin-T)."""
        reduction = self.vit.feature_info[-1]['reduction']
        return reduction, reduction

    def forward(self, x: Tensor, distractor_index: Optional[Tensor] = None) -> DCALOutput:
        """Images ``[B, 3, H, W]`` -> :class:`DCALOutput` (SA; PWCA in train mode); ``distractor_index [B]`` pairs
        them."""
        x = x.to(self.vit.patch_embed.proj.weight.dtype)
        if not (self.training and self.use_pwca):
            sa_feature, sa_logits = self._head(self.vit.forward_features(x))
            return DCALOutput(sa_feature=sa_feature, sa_logits=sa_logits)
        partner = pwca_partner(x.shape[0], distractor_index, x.device)
        tokens = self.vit.patch_embed(x)
        stream = torch.cat([tokens, tokens])
        for stage in self.vit.layers:
            stream = stage.downsample(stream)
            for block in stage.blocks:
                stream = self._checkpointed(self_and_pair_window_block, block, stream, partner=partner,
                                            partner_gradient=self.pwca_partner_gradient)
        sa_tokens, pwca_tokens = self.vit.norm(stream).chunk(2)
        sa_feature, sa_logits = self._head(sa_tokens)
        pwca_feature, pwca_logits = self._head(pwca_tokens)
        return DCALOutput(sa_feature=sa_feature, pwca_feature=pwca_feature, sa_logits=sa_logits,
                          pwca_logits=pwca_logits)

    def _head(self, tokens: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Normed final tokens ``[B, h, w, C]`` -> pooled feature ``[B, C]`` and logits ``[B, K]`` by timm's head."""
        feature = self.vit.forward_head(tokens, pre_logits=True)
        return feature, self._classify(self.vit.head.fc, feature)
