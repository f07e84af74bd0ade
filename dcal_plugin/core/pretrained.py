"""timm's pretrained weights of the paper's lineage (METHOD §7), per task, and building a timm model with them."""
from typing import Any, Optional, Union

import timm
from timm.models import model_entrypoint
from torch import nn

from .checkpoint import POS_EMBED_KEPT_BY_TIMM, load_timm_state_dict

# The paper's FGVC rows: DeiT on ImageNet-1k; ViT-B/16 and R50-ViT-B on Google's original ImageNet-21k weights, which
# the FGVC ViT work of the paper's time (TransFG) fine-tunes (the 384 hybrid has only its 1k fine-tuning in timm)
PAPER_PRETRAINED_TAGS = {
    'deit_tiny_patch16_224': 'fb_in1k', 'deit_small_patch16_224': 'fb_in1k', 'deit_base_patch16_224': 'fb_in1k',
    'vit_base_patch16_224': 'orig_in21k', 'vit_base_r50_s16_224': 'orig_in21k',
    'vit_base_r50_s16_384': 'orig_in21k_ft_in1k',
    # the supplementary's CaiT-XS24 row (CUB 88.5 -> 89.7): timm has XS24 only at 384, on ImageNet-1k with distillation
    'cait_xs24_384': 'fb_dist_in1k',
    # the supplementary's Swin-T rows (PWCA only; CUB 84.9 -> 85.8, MSMT17 mAP 55.7 -> 56.7): the paper names no
    # weights; Swin-T's own ImageNet-1k release [ours], as the paper's other backbones start from ImageNet
    'swin_tiny_patch4_window7_224': 'ms_in1k',
}
# Re-ID: TransReID's ViT-B/16 file jx_vit_base_p16_224-80ecf9dd.pth is timm's orig_in21k_ft_in1k; the rest as FGVC
# (the paper has no R50-ViT Re-ID row: that backbone's Re-ID tag is ours)
REID_PRETRAINED_TAGS = dict(PAPER_PRETRAINED_TAGS, vit_base_patch16_224='orig_in21k_ft_in1k')
# Beyond the paper, for both tasks: the ViTs fine-grained and Re-ID work starts from today (the paper has no row for
# them). DINOv2 (self-supervised on LVD-142M; with 4 registers or without), CLIP ViT-B/16 (OpenAI's image tower),
# distilled DeiT (class and distillation tokens)
BEYOND_PAPER_TAGS = {
    'vit_small_patch14_reg4_dinov2': 'lvd142m', 'vit_base_patch14_reg4_dinov2': 'lvd142m',
    'vit_small_patch14_dinov2': 'lvd142m', 'vit_base_patch14_dinov2': 'lvd142m',
    'vit_base_patch16_clip_224': 'openai',
    'deit_tiny_distilled_patch16_224': 'fb_in1k', 'deit_small_distilled_patch16_224': 'fb_in1k',
    'deit_base_distilled_patch16_224': 'fb_in1k',
}
_TAGS_BY_TASK = {'fgvc': dict(BEYOND_PAPER_TAGS, **PAPER_PRETRAINED_TAGS),
                 'reid': dict(BEYOND_PAPER_TAGS, **REID_PRETRAINED_TAGS)}
SUPPORTED_MODELS = tuple(PAPER_PRETRAINED_TAGS) + tuple(BEYOND_PAPER_TAGS)


def paper_pretrained_tag(model_name: str, task: str = 'fgvc') -> Optional[str]:
    """The timm tag of the weights ``task`` ('fgvc' or 'reid') fine-tunes ``model_name`` from, else None.

    The paper's for its backbones (:data:`PAPER_PRETRAINED_TAGS`, :data:`REID_PRETRAINED_TAGS`),
    ours for the others (:data:`BEYOND_PAPER_TAGS`).
    """
    if task not in _TAGS_BY_TASK:
        raise ValueError(f'task must be one of {tuple(_TAGS_BY_TASK)}, got {task!r}')
    return _TAGS_BY_TASK[task].get(model_name)


def create_timm_model(model_name: str, pretrained: Union[bool, str], **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the weights of ``pretrained``: True for the paper's FGVC tag, a string for a tag.

    One clear error when the weights are neither in the hub cache nor downloadable.
    """
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    tag = paper_pretrained_tag(model_name) if pretrained is True else pretrained
    name = f'{model_name}.{tag}' if tag else model_name
    try:
        if 'img_size' in kwargs and model_entrypoint(model_name).__module__ in POS_EMBED_KEPT_BY_TIMM:
            return _pretrained_at_img_size(name, model_name, **kwargs)
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError and connection errors
        raise RuntimeError(
            f'timm\'s pretrained weights {name!r} are neither in the Hugging Face hub cache nor downloadable here '
            f'({type(error).__name__}). Either run once with network access (timm downloads them into the hub '
            'cache, $HF_HOME or ~/.cache/huggingface, and reads them from there afterwards, also with '
            'HF_HUB_OFFLINE=1), or give a local weights file (.pth, .safetensors or .npz) instead of pretrained: '
            'checkpoint_path of DCALViT.from_timm and build_dcal_reid, model.backbone.checkpoint_path in MMPretrain '
            'configs, model.checkpoint in torchreid yaml; pretrained=False (torchreid yaml: model.pretrained False) '
            'starts from random weights') from error


def _pretrained_at_img_size(name: str, model_name: str, **kwargs: Any) -> nn.Module:
    """timm's ``name`` (a CaiT) with its pretrained weights, built at ``kwargs['img_size']``.

    timm's CaiT filter keeps the weights' position embeddings at their own grid, so timm builds
    that model only at the weights' size: build it there with the weights, then load them into the
    model at ``img_size`` by :func:`~dcal_plugin.core.checkpoint.load_timm_state_dict`, which
    resamples ``pos_embed``.
    """
    source = timm.create_model(name, pretrained=True, **{key: kwargs[key] for key in kwargs if key != 'img_size'})
    model = timm.create_model(name, pretrained=False, **kwargs)
    load_timm_state_dict(model, source.state_dict(), model_name, f'timm\'s pretrained weights {name!r}')
    return model
