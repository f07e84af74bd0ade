"""Loading timm checkpoint files into a timm ``VisionTransformer``, through timm's own filter functions."""
import functools
import importlib
import os
import pickle
from typing import Callable, Dict, List

from timm.models import load_state_dict, model_entrypoint
from torch import Tensor, nn

# Keyword arguments that timm's model builders bind to their module's ``checkpoint_filter_fn``.
_FILTER_KWARGS = {'timm.models.deit': {'adapt_layer_scale': True}}
_CLASSIFIER_KEYS = ('head.weight', 'head.bias')
_SHOWN = 5


def checkpoint_filter(model_name: str) -> Callable[[Dict[str, Tensor], nn.Module], Dict[str, Tensor]]:
    """The ``(state_dict, model) -> state_dict`` filter timm applies when it loads ``model_name``'s weights."""
    module_name = model_entrypoint(model_name).__module__
    filter_fn = getattr(importlib.import_module(module_name), 'checkpoint_filter_fn', None)
    if filter_fn is None:
        raise ValueError(f'timm module {module_name} of {model_name!r} has no checkpoint_filter_fn')
    return functools.partial(filter_fn, **_FILTER_KWARGS.get(module_name, {}))


def load_timm_checkpoint(model: nn.Module, checkpoint_path: str, model_name: str) -> None:
    """Load a timm checkpoint file (state_dict, or dict with ``model``/``state_dict``; ``.pth``/``.safetensors``).

    The file is read with ``weights_only=True``; position embeddings (and patch embeddings) are
    resized by timm's own filter for ``model_name``, exactly as ``timm.create_model(...,
    pretrained=True, pretrained_cfg_overlay=dict(file=...))`` resizes them. The classifier is
    dropped when its shape differs from the model's (e.g. ``num_classes=0`` or another label
    set). Any other difference raises one ``ValueError`` naming the first mismatched keys.
    """
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f'timm checkpoint file not found: {checkpoint_path}')
    try:
        state_dict = load_state_dict(str(checkpoint_path), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise ValueError(f'could not read {checkpoint_path} with weights_only=True (a file holding pickled '
                         f'objects besides tensors is refused: save the state_dict alone): {error}') from error
    try:
        state_dict = checkpoint_filter(model_name)(state_dict, model)
    except (RuntimeError, ValueError, IndexError, KeyError) as error:
        raise ValueError(f'checkpoint {checkpoint_path} does not fit {model_name}: {error}') from error
    expected = model.state_dict()
    for key in _CLASSIFIER_KEYS:
        if key in state_dict and (key not in expected or state_dict[key].shape != expected[key].shape):
            del state_dict[key]
    problems = _mismatches(state_dict, expected)
    if problems:
        raise ValueError(
            f'checkpoint {checkpoint_path} does not match {model_name} '
            f'(img_size={tuple(model.patch_embed.img_size)}, num_classes={model.num_classes}): '
            + '; '.join(problems))
    model.load_state_dict(state_dict, strict=False)


def _mismatches(state_dict: Dict[str, Tensor], expected: Dict[str, Tensor]) -> List[str]:
    """Human-readable lists of the first mismatched shapes, missing and unexpected keys (empty when they fit)."""
    shapes = [f'{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}'
              for key, value in state_dict.items() if key in expected and value.shape != expected[key].shape]
    missing = [key for key in expected if key not in state_dict and key not in _CLASSIFIER_KEYS]
    unexpected = [key for key in state_dict if key not in expected]
    problems = []
    for title, items in (('shape mismatch', shapes), ('missing', missing), ('unexpected', unexpected)):
        if items:
            more = f' (and {len(items) - _SHOWN} more)' if len(items) > _SHOWN else ''
            problems.append(f'{title} [{len(items)}]: ' + ', '.join(items[:_SHOWN]) + more)
    return problems
