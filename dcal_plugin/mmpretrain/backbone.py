"""``DCALVisionTransformer``: the core ``DCALViT`` as an mmpretrain backbone."""
from typing import Any, List, NamedTuple, Optional, Tuple, Union

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..core import DCALViT
from ..core.families import dcal_from_timm
from .checkpoint import load_pretrained

# mmpretrain VisionTransformer options that select per-block outputs, which DCAL does not give
_PER_BLOCK_OPTIONS = ('out_indices', 'out_type')
_EMBEDDING_PARAMETERS = ('dcal.vit.cls_token', 'dcal.vit.reg_token', 'dcal.vit.dist_token', 'dcal.vit.pos_embed',
                         'dcal.vit.patch_embed.', 'dcal.vit.norm_pre.')


class BranchFeatures(NamedTuple):
    """The backbone's output: each branch's class-token feature ``[B, C]`` or None, by name or by position 0, 1, 2.

    mmpretrain's stock heads (``LinearClsHead``, ``VisionTransformerClsHead``, ...) classify
    ``feats[-1]``, the last stage of a multi-stage backbone: here PWCA's feature in training (a
    classifier trained on the wrong branch, without an error) and None in evaluation. So indexing
    from the end raises a ``TypeError`` naming ``DCALClsHead``. Why a refusal, and why here
    [ours]: putting SA last would train SA alone while GLCA and PWCA run unused, silent as well;
    ``ImageClassifier`` builds backbone and head apart, so the one place where they meet is the
    head reading these features. That is the head's first call: the first training (or
    validation) step, before any optimizer step; under ``torch.compile`` too (dynamo traces this
    method and raises the same error); DDP wraps the whole classifier, so the features never leave
    it; ``extract_feat(stage='backbone')`` users get the same error for ``feats[-1]``. A stock neck
    that pools maps (``GlobalAveragePooling``, ``GeM``) fails at its first call on its own (these
    features are already pooled, ``[B, C]``); ``LinearNeck`` reads ``feats[-1]`` and gets this error.
    """

    sa: Tensor
    glca: Optional[Tensor]
    pwca: Optional[Tensor]

    def __getitem__(self, index: Union[int, slice]) -> Any:
        """``tuple`` indexing, refused for negative integers (the stock heads' ``feats[-1]``)."""
        if isinstance(index, int) and index < 0:
            raise TypeError(
                f'DCALVisionTransformer returns the branch features (sa, glca, pwca), not stages: feats[{index}] is '
                'PWCA\'s feature in training and None in evaluation. mmpretrain\'s stock heads (LinearClsHead, '
                'VisionTransformerClsHead, ...) classify feats[-1]: use head=dict(type=\'DCALClsHead\', ...), '
                'which classifies SA, GLCA and PWCA, and no neck; read a feature as feats.sa or feats[0]')
        return tuple.__getitem__(self, index)


@MODELS.register_module()
class DCALVisionTransformer(BaseModule):
    """DCAL on a timm ViT/DeiT/R50-hybrid/Swin/CaiT, returning the branch features :class:`BranchFeatures`.

    The core model is the family's (:func:`~dcal_plugin.core.families.dcal_from_timm`): ``DCALViT``,
    ``DCALSwin`` (PWCA only, as the paper: GLCA None; needs ``use_glca=False``) or ``DCALCaiT``.

    Train mode returns all three, each ``[B, C]`` (the PWCA partner is another image of the
    mini-batch); in eval mode PWCA is None, and so is GLCA with ``sa_only_inference``; a branch
    switched off by ``use_glca``/``use_pwca`` is always None. Only :class:`DCALClsHead` reads
    these: a stock head's ``feats[-1]`` is refused (:class:`BranchFeatures`), and so are
    ``out_indices`` and ``out_type`` (there are no per-block maps to select).

    Args:
        model_name (str): a timm model name, e.g. ``'vit_base_patch16_224'``.
        checkpoint_path (str, optional): a local timm checkpoint file, loaded in ``init_weights``
            with position embeddings resized by timm's filter. Same as
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` without ``prefix``.
        img_size (int | tuple[int, int], optional): input size; timm's default when None.
        pretrained (bool | str): timm's pretrained weights through its Hugging Face hub mechanism:
            True for the paper's tag, a string for another tag (see
            :meth:`~dcal_plugin.core.DCALViT.from_timm`). Defaults to False.
        drop_path_rate (float): stochastic depth rate. Defaults to 0.
        with_cp (bool): activation checkpointing of every block (mmpretrain's name for the core's
            ``grad_checkpointing``): less memory, one more forward per block in training.
            Defaults to False.
        frozen_stages (int): as mmpretrain's ``VisionTransformer``: N > 0 freezes the patch
            embedding, class token, position embedding (and ``norm_pre``) and SA blocks 0..N-1,
            plus the final norm when N is the depth; frozen modules have no gradient and stay in
            eval mode (no dropout, no drop path) through ``train()``. GLCA's block is frozen with
            its source block ``glca_block_index`` [ours: it is a copy of that block and runs
            beside it on the same tokens, its depth in :meth:`get_layer_depth` too; so freezing
            every block is a linear probe of both features], GLCA's norm with the final norm.
            Defaults to -1 (nothing frozen).
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH_OR_URL, prefix=...)``
            loads, in ``init_weights``, a timm checkpoint, an mmpretrain model-zoo ``VisionTransformer``
            (ViT, DeiT; ``prefix='backbone.'``) or a DCAL backbone (``prefix='backbone.'`` of a DCAL
            run's checkpoint, GLCA included); see
            :func:`~dcal_plugin.mmpretrain.checkpoint.load_pretrained`. Any other init_cfg is mmengine's.
        **kwargs: DCAL's options, by the names and with the defaults of
            :class:`~dcal_plugin.core.DCALViT` (``local_query_ratio``, ``glca_block_index``,
            ``use_glca``, ``use_pwca``, ``sa_only_inference``, ``query_selection``, ...), then
            ``timm.create_model``'s (e.g. ``depth``, ``patch_size``).
    """

    def __init__(
            self,
            model_name: str,
            checkpoint_path: Optional[str] = None,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            pretrained: Union[bool, str] = False,
            drop_path_rate: float = 0.0,
            with_cp: bool = False,
            frozen_stages: int = -1,
            init_cfg: Optional[dict] = None,
            **kwargs,
    ) -> None:
        if sum((bool(pretrained), checkpoint_path is not None, init_cfg is not None)) > 1:
            raise ValueError('give one of pretrained, checkpoint_path and init_cfg')
        per_block = [name for name in _PER_BLOCK_OPTIONS if name in kwargs]
        if per_block:
            raise ValueError(f'{", ".join(per_block)} not supported: DCALVisionTransformer returns each branch\'s '
                             'normed class token (sa, glca, pwca), not per-block outputs; remove the option')
        if checkpoint_path is not None:
            init_cfg = dict(type='Pretrained', checkpoint=checkpoint_path)
        super().__init__(init_cfg=init_cfg)
        self.dcal = dcal_from_timm(
            model_name, img_size=img_size, num_classes=0, drop_path_rate=drop_path_rate, pretrained=pretrained,
            grad_checkpointing=with_cp or kwargs.pop('grad_checkpointing', False), **kwargs)
        if frozen_stages > 0 and not isinstance(self.dcal, DCALViT):
            raise ValueError(f'frozen_stages is supported for ViT backbones, not {type(self.dcal).__name__}')
        depth = len(self.dcal.vit.blocks) if isinstance(self.dcal, DCALViT) else 0
        if frozen_stages > depth:
            raise ValueError(f'frozen_stages must be at most the depth {depth} (-1: none), got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self._freeze_stages()

    @property
    def embed_dim(self) -> int:
        """Width C of every branch feature."""
        return self.dcal.vit.num_features

    def init_weights(self) -> None:
        """Load a ``Pretrained`` init_cfg's checkpoint (timm, mmpretrain ViT/DeiT, DCAL), else initialise as
        mmengine."""
        pretrained = self._pretrained_cfg()
        if pretrained is None:
            super().init_weights()
            return
        checkpoint, prefix = pretrained['checkpoint'], pretrained.get('prefix')
        checkpoint_format = load_pretrained(self.dcal, checkpoint, prefix)
        self._is_init = True
        print_log(f'DCALVisionTransformer: loaded {checkpoint_format} weights from {checkpoint}'
                  f'{f" (prefix {prefix!r})" if prefix else ""} into {self.dcal.architecture} at '
                  f'{tuple(self.dcal.vit.patch_embed.img_size)}', logger='current')

    def forward(self, x: Tensor) -> BranchFeatures:
        """Images ``[B, 3, H, W]`` -> branch features ``(sa, glca, pwca)``, each ``[B, C]`` or None (branch not run)."""
        out = self.dcal(x)
        return BranchFeatures(out.sa_feature, out.glca_feature, out.pwca_feature)

    def train(self, mode: bool = True) -> 'DCALVisionTransformer':
        """``nn.Module.train``, the ``frozen_stages`` modules kept in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """mmpretrain's layer depth of a parameter and the number of depths, L + 2, for layer-wise lr decay.

        As mmpretrain's ``VisionTransformer``: 0 for the embedding (patch embedding, class token,
        position embedding; also ``norm_pre``, which acts on it before block 0 [ours: mmpretrain's
        own ``pre_norm`` falls through to the last depth]), i + 1 for SA block i, L + 1 for the
        final norm and everything outside the backbone (the head). GLCA's block gets the depth of
        SA block ``glca_block_index`` [ours]: it starts as a copy of that pretrained block and
        runs beside it on the tokens entering it, so it is as far from the output and should move
        as little; GLCA's norm gets the final norm's depth.
        """
        if not isinstance(self.dcal, DCALViT):
            raise NotImplementedError('layer-wise lr decay is defined for ViT backbones, '
                                      f'not {type(self.dcal).__name__}')
        num_depths = len(self.dcal.vit.blocks) + 2
        if not param_name.startswith(prefix):  # the head
            return num_depths - 1, num_depths
        name = param_name[len(prefix):]
        if name.startswith('dcal.vit.blocks.'):
            return int(name.split('.')[3]) + 1, num_depths
        if name.startswith('dcal.glca_block.'):
            return self.dcal.glca_block_index + 1, num_depths
        if name.startswith(_EMBEDDING_PARAMETERS):
            return 0, num_depths
        return num_depths - 1, num_depths

    def _freeze_stages(self) -> None:
        """Switch off the gradient of the ``frozen_stages`` modules and parameters, and put the modules in eval mode."""
        if self.frozen_stages <= 0:
            return
        vit = self.dcal.vit
        prefix = [vit.cls_token, vit.reg_token, getattr(vit, 'dist_token', None), vit.pos_embed]  # those it has
        parameters = [parameter for parameter in prefix if parameter is not None]
        for module in self._frozen_modules():
            module.eval()
            parameters.extend(module.parameters())
        for parameter in parameters:
            parameter.requires_grad = False

    def _frozen_modules(self) -> List[nn.Module]:
        """The modules ``frozen_stages`` freezes: embedding, first blocks (GLCA's with its source), norms after all."""
        if self.frozen_stages <= 0:
            return []
        vit, dcal = self.dcal.vit, self.dcal
        modules = [vit.patch_embed, vit.pos_drop, vit.patch_drop, vit.norm_pre, *vit.blocks[:self.frozen_stages]]
        if dcal.use_glca and dcal.glca_block_index < self.frozen_stages:
            modules.append(dcal.glca_block)
        if self.frozen_stages == len(vit.blocks):
            modules += [vit.norm, dcal.glca_norm] if dcal.use_glca else [vit.norm]
        return modules

    def _pretrained_cfg(self) -> Optional[dict]:
        """The ``Pretrained`` init_cfg, or None; a list holding one is refused (mmengine would load it unchecked)."""
        cfg = self.init_cfg
        if isinstance(cfg, dict):
            return cfg if cfg.get('type') == 'Pretrained' else None
        if any(entry.get('type') == 'Pretrained' for entry in cfg or []):
            raise ValueError('give the Pretrained init_cfg of DCALVisionTransformer alone, as a dict, not in a list')
        return None
