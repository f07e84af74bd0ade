"""``DCALVisionTransformer``: the core ``DCALViT`` as an mmpretrain backbone."""
from typing import Optional, Tuple, Union

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from ..core import DCALViT


@MODELS.register_module()
class DCALVisionTransformer(BaseModule):
    """DCAL on a timm ViT/DeiT/R50-hybrid, returning the branch class tokens ``(sa, glca, pwca)``, each ``[B, C]`` or None.

    Train mode returns all three (the PWCA partner is another image of the mini-batch); in eval
    mode PWCA is None, and so is GLCA with ``sa_only_inference``; a branch switched off by
    ``use_glca``/``use_pwca`` is always None.

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
        init_cfg (dict, optional): a ``Pretrained`` init_cfg without ``prefix`` names a timm
            checkpoint file; with ``prefix`` (e.g. ``'backbone.'`` of an mmpretrain DCAL
            checkpoint) it is handled by mmengine as usual.
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
            init_cfg: Optional[dict] = None,
            **kwargs,
    ) -> None:
        if sum((bool(pretrained), checkpoint_path is not None, init_cfg is not None)) > 1:
            raise ValueError('give one of pretrained, checkpoint_path and init_cfg')
        if checkpoint_path is not None:
            init_cfg = dict(type='Pretrained', checkpoint=checkpoint_path)
        super().__init__(init_cfg=init_cfg)
        self.dcal = DCALViT.from_timm(
            model_name, img_size=img_size, num_classes=0, drop_path_rate=drop_path_rate, pretrained=pretrained,
            grad_checkpointing=with_cp or kwargs.pop('grad_checkpointing', False), **kwargs)

    @property
    def embed_dim(self) -> int:
        """Width C of every branch feature."""
        return self.dcal.vit.embed_dim

    def init_weights(self) -> None:
        """Load a timm checkpoint through the core (filter, resizing, GLCA copy), else mmengine's initialisation."""
        timm_file = self._timm_checkpoint()
        if timm_file is None:
            super().init_weights()
            return
        self.dcal.load_timm_checkpoint(timm_file)
        self._is_init = True
        print_log(f'DCALVisionTransformer: loaded timm checkpoint {timm_file} '
                  f'({self.dcal.vit.pretrained_cfg["architecture"]}, grid {self.dcal.grid_size})', logger='current')

    def forward(self, x: Tensor) -> Tuple[Optional[Tensor], ...]:
        """Images ``[B, 3, H, W]`` -> branch features ``(sa, glca, pwca)``, each ``[B, C]`` or None (branch not run)."""
        out = self.dcal(x)
        return out.sa_feature, out.glca_feature, out.pwca_feature

    def _timm_checkpoint(self) -> Optional[str]:
        """The timm file named by a ``Pretrained`` init_cfg without ``prefix``, else None."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and 'prefix' not in cfg:
            return cfg['checkpoint']
        return None
