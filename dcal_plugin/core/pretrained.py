"""timm's pretrained weights of the paper's lineage (METHOD §7), per task, and building a timm model with them."""
from typing import Any, Optional, Union

import timm
from timm.models.vision_transformer import VisionTransformer

# The paper's FGVC rows: DeiT on ImageNet-1k; ViT-B/16 and R50-ViT-B on Google's original ImageNet-21k weights, which the FGVC ViT
# work of the paper's time (TransFG) fine-tunes (the 384 hybrid has only its 1k fine-tuning in timm)
PAPER_PRETRAINED_TAGS = {
    'deit_tiny_patch16_224': 'fb_in1k', 'deit_small_patch16_224': 'fb_in1k', 'deit_base_patch16_224': 'fb_in1k',
    'vit_base_patch16_224': 'orig_in21k', 'vit_base_r50_s16_224': 'orig_in21k',
    'vit_base_r50_s16_384': 'orig_in21k_ft_in1k',
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


def create_timm_model(model_name: str, pretrained: Union[bool, str], **kwargs: Any) -> VisionTransformer:
    """``timm.create_model`` with the weights of ``pretrained``: True for the paper's FGVC tag, a string for a tag.

    One clear error when the weights are neither in the hub cache nor downloadable.
    """
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    tag = paper_pretrained_tag(model_name) if pretrained is True else pretrained
    name = f'{model_name}.{tag}' if tag else model_name
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError and connection errors
        raise RuntimeError(
            f'timm\'s pretrained weights {name!r} are neither in the Hugging Face hub cache nor downloadable here '
            f'({type(error).__name__}). Either run once with network access (timm downloads them into the hub '
            'cache, $HF_HOME or ~/.cache/huggingface, and reads them from there afterwards, also with '
            'HF_HUB_OFFLINE=1), or give a local weights file (.pth, .safetensors or .npz) instead of pretrained: '
            'checkpoint_path of DCALViT.from_timm and build_dcal_reid, model.backbone.checkpoint_path in MMPretrain '
            'configs, model.checkpoint in torchreid yaml (torchreid\'s build_model: pretrained=False starts from '
            'random weights)') from error
