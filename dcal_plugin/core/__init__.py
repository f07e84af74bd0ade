"""Toolbox-agnostic DCAL in plain PyTorch + timm: never imports mmengine, mmpretrain or torchreid."""
from .attention import attend, attend_with_map
from .checkpoint import checkpoint_filter, load_timm_checkpoint, load_timm_state_dict
from .dcal_cait import DCALCaiT
from .dcal_model import DCALModel
from .dcal_swin import DCALSwin
from .dcal_vit import DCALViT
from .families import dcal_family, dcal_from_timm
from .finite_state import NonFiniteStateError, check_finite_state
from .losses import LOG_VAR_BOUNDS, NonFiniteLossError, UncertaintyWeightedLoss, check_finite
from .output import BRANCHES, DCALOutput
from .pretrained import (
    BEYOND_PAPER_TAGS, PAPER_PRETRAINED_TAGS, REID_PRETRAINED_TAGS, SUPPORTED_MODELS, paper_pretrained_tag)
from .rollout import (
    class_token_rollout, num_local_queries, random_local_queries, select_local_queries)

__all__ = [
    'BEYOND_PAPER_TAGS', 'BRANCHES', 'DCALCaiT', 'DCALModel', 'DCALOutput', 'DCALSwin', 'DCALViT', 'LOG_VAR_BOUNDS',
    'NonFiniteLossError', 'NonFiniteStateError', 'PAPER_PRETRAINED_TAGS', 'REID_PRETRAINED_TAGS', 'SUPPORTED_MODELS',
    'UncertaintyWeightedLoss', 'attend', 'attend_with_map', 'check_finite', 'check_finite_state',
    'checkpoint_filter', 'class_token_rollout', 'dcal_family', 'dcal_from_timm', 'load_timm_checkpoint',
    'load_timm_state_dict', 'num_local_queries', 'paper_pretrained_tag', 'random_local_queries',
    'select_local_queries',
]
