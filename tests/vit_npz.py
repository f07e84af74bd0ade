"""Writing a timm ViT (or R50+ViT hybrid) as an original Google ViT ``.npz``, the inverse of timm's
``_load_weights``."""
from typing import Dict

import numpy as np
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


def save_vit_npz(model: VisionTransformer, path: str) -> None:
    """Save ``model``'s weights at ``path`` in the layout of ``ViT-B_16.npz`` / ``R50+ViT-B_16.npz``."""
    np.savez(path, **{key: value.detach().numpy() for key, value in vit_npz_arrays(model).items()})


def vit_npz_arrays(model: VisionTransformer) -> Dict[str, Tensor]:
    """``model``'s weights by the original ViT names and shapes (Flax: conv HWIO, dense (in, out), heads split)."""
    arrays = {}
    backbone = getattr(model.patch_embed, 'backbone', None)
    if backbone is not None:
        arrays.update(_conv_norm('conv_root', 'gn_root', backbone.stem.conv, backbone.stem.norm))
        for i, stage in enumerate(backbone.stages):
            for j, block in enumerate(stage.blocks):
                unit = f'block{i + 1}/unit{j + 1}/'
                for r in (1, 2, 3):
                    arrays.update(_conv_norm(f'{unit}conv{r}', f'{unit}gn{r}', getattr(block, f'conv{r}'),
                                             getattr(block, f'norm{r}')))
                if block.downsample is not None:
                    arrays.update(_conv_norm(f'{unit}conv_proj', f'{unit}gn_proj', block.downsample.conv,
                                             block.downsample.norm))
    arrays['embedding/kernel'] = _hwio(model.patch_embed.proj.weight)
    arrays['embedding/bias'] = model.patch_embed.proj.bias
    arrays['cls'] = model.cls_token
    arrays['Transformer/posembed_input/pos_embedding'] = model.pos_embed
    arrays.update(_norm('Transformer/encoder_norm', model.norm))
    if isinstance(model.head, nn.Linear):
        arrays.update({'head/kernel': model.head.weight.T, 'head/bias': model.head.bias})
    for index, block in enumerate(model.blocks):
        prefix, heads = f'Transformer/encoderblock_{index}/', block.attn.num_heads
        attention = prefix + 'MultiHeadDotProductAttention_1/'
        arrays.update(_norm(prefix + 'LayerNorm_0', block.norm1))
        for name, weight, bias in zip(('query', 'key', 'value'), block.attn.qkv.weight.chunk(3),
                                      block.attn.qkv.bias.chunk(3)):
            arrays[f'{attention}{name}/kernel'] = weight.T.reshape(weight.shape[1], heads, -1)  # (C, H, D)
            arrays[f'{attention}{name}/bias'] = bias.reshape(heads, -1)
        proj = block.attn.proj
        arrays[attention + 'out/kernel'] = proj.weight.reshape(proj.out_features, heads, -1).permute(1, 2, 0)
        arrays[attention + 'out/bias'] = proj.bias
        arrays.update(_norm(prefix + 'LayerNorm_2', block.norm2))
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            arrays.update({f'{prefix}MlpBlock_3/Dense_{r}/kernel': fc.weight.T,
                           f'{prefix}MlpBlock_3/Dense_{r}/bias': fc.bias})
    return arrays


def _hwio(weight: Tensor) -> Tensor:
    """A torch conv kernel ``(O, I, kh, kw)`` in Flax's ``(kh, kw, I, O)``."""
    return weight.permute(2, 3, 1, 0)


def _norm(name: str, norm: nn.Module) -> Dict[str, Tensor]:
    """A LayerNorm/GroupNorm's ``scale`` and ``bias``."""
    return {f'{name}/scale': norm.weight, f'{name}/bias': norm.bias}


def _conv_norm(conv_name: str, norm_name: str, conv: nn.Module, norm: nn.Module) -> Dict[str, Tensor]:
    """A ResNet conv kernel and its GroupNorm."""
    return {f'{conv_name}/kernel': _hwio(conv.weight), **_norm(norm_name, norm)}
