"""Pretrained weights of a ``Pretrained`` init_cfg for ``DCALVisionTransformer``: timm, mmpretrain ViT/DeiT or DCAL."""
import os
import re
from typing import Dict, Optional, Tuple

from mmengine.runner import CheckpointLoader
from torch import Tensor

from ..core import DCALViT
from ..core.dcal_model import DCALModel
from ..core.checkpoint import read_state_dict

# mmpretrain's VisionTransformer parameter names -> timm's; the first pattern that matches a key renames it
_MMPRETRAIN_TO_TIMM = (
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^pre_norm\.', 'norm_pre.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.gamma1\.weight$', r'blocks.\1.ls1.gamma'),
    (r'^layers\.(\d+)\.attn\.', r'blocks.\1.attn.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^layers\.(\d+)\.ffn\.gamma2\.weight$', r'blocks.\1.ls2.gamma'),
    (r'^ln1\.', 'norm.'),
)


def load_pretrained(dcal: DCALModel, checkpoint: str, prefix: Optional[str] = None) -> str:
    """Load the backbone weights of ``checkpoint`` under ``prefix`` into ``dcal``; returns the format that was read.

    Formats, told apart by their keys: a DCAL backbone's own (``dcal.vit.*``, ``dcal.glca_*``: GLCA
    is loaded too), mmpretrain's ``VisionTransformer`` (``layers.N.ln1``, ...: renamed to timm's
    names; ViT backbones only) and timm's (also an original ViT ``.npz``). The last two go through the core's timm
    loading (position embeddings resized by timm's filter, GLCA copied from SA), the first through
    :meth:`~dcal_plugin.core.DCALViT.load_dcal_state_dict`; each raises one ``ValueError`` naming
    every kind of key that does not fit, so no load leaves weights random or half-loaded. A file in
    which no key starts with ``prefix`` (a timm state_dict, a backbone saved alone) is read whole.
    """
    if '://' not in checkpoint and checkpoint.lower().endswith('.npz'):
        dcal.load_timm_checkpoint(checkpoint)
        return 'timm .npz'
    weights, source = _weights_under(read_checkpoint(checkpoint), prefix, checkpoint)
    if any(key.startswith('dcal.') for key in weights):
        dcal.load_dcal_state_dict({key[len('dcal.'):]: value for key, value in weights.items()}, source)
        return 'DCAL'
    if isinstance(dcal, DCALViT) and any(key.startswith('layers.') for key in weights):  # Swin's own are 'layers.'
        dcal.load_timm_state_dict(mmpretrain_to_timm(weights), source)
        return 'mmpretrain VisionTransformer'
    dcal.load_timm_state_dict(weights, source)
    return 'timm'


def read_checkpoint(checkpoint: str) -> Dict[str, Tensor]:
    """The state_dict at a URL (mmengine's loader: ``https://``, ``open-mmlab://``, ...) or path (timm's reader)."""
    if '://' in checkpoint:
        loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        return next((loaded[key] for key in ('state_dict', 'model') if isinstance(loaded.get(key), dict)), loaded)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    return read_state_dict(checkpoint)  # .pth or .safetensors, weights_only=True


def mmpretrain_to_timm(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """mmpretrain ``VisionTransformer`` weights by timm's names (a key no pattern knows is kept, and refused later)."""
    return {_timm_name(key): value for key, value in state_dict.items()}


def _timm_name(key: str) -> str:
    """timm's name of an mmpretrain ``VisionTransformer`` parameter, or ``key`` itself when no pattern matches."""
    for pattern, replacement in _MMPRETRAIN_TO_TIMM:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def _weights_under(state_dict: Dict[str, Tensor], prefix: Optional[str],
                   checkpoint: str) -> Tuple[Dict[str, Tensor], str]:
    """The weights under ``prefix`` without it (all when none starts with it) and how to name their source in errors."""
    if not prefix:
        return state_dict, checkpoint
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    selected = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not selected:
        return state_dict, f'{checkpoint} (no key starts with {prefix!r}: read whole)'
    return selected, f'{checkpoint} (keys under {prefix!r})'
