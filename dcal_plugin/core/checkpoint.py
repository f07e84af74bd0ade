"""Loading timm checkpoints (files or state_dicts) into a timm ``VisionTransformer`` through timm's filters and
readers."""
import copy
import functools
import importlib
import os
import pickle
from typing import Callable, Dict, List

import torch
from timm.layers import resample_abs_pos_embed
from timm.models import load_state_dict, model_entrypoint
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .checkpoint_file import CheckpointFileError, check_checkpoint_file, check_contents

# Keyword arguments that timm's model builders bind to their module's ``checkpoint_filter_fn``.
_FILTER_KWARGS = {'timm.models.deit': {'adapt_layer_scale': True}}
# timm modules whose filter keeps a checkpoint's ``pos_embed`` at the checkpoint's grid (CaiT's: ``(1, P, C)``, no
# prefix token); ours resamples it to the model's grid, as timm's ViT filter does
POS_EMBED_KEPT_BY_TIMM = ('timm.models.cait',)
# timm's classifier: ``head`` (ViT, DeiT, CaiT) or ``head.fc`` (Swin's ClassifierHead)
_CLASSIFIER_KEYS = ('head.weight', 'head.bias', 'head.fc.weight', 'head.fc.bias')
# What timm's filters and .npz reader raise on a file that does not fit the model
_FIT_ERRORS = (RuntimeError, ValueError, IndexError, KeyError, NotImplementedError)
_SHOWN = 5
STATE_DICT_FILE = 'a state_dict (.pth, .safetensors) or a checkpoint dict holding one under "state_dict" or "model"'


def checkpoint_filter(model_name: str) -> Callable[[Dict[str, Tensor], nn.Module], Dict[str, Tensor]]:
    """The ``(state_dict, model) -> state_dict`` filter timm applies when it loads ``model_name``'s weights."""
    module_name = model_entrypoint(model_name).__module__
    filter_fn = getattr(importlib.import_module(module_name), 'checkpoint_filter_fn', None)
    if filter_fn is None:
        raise ValueError(f'timm module {module_name} of {model_name!r} has no checkpoint_filter_fn')
    filter_fn = functools.partial(filter_fn, **_FILTER_KWARGS.get(module_name, {}))
    if module_name in POS_EMBED_KEPT_BY_TIMM:
        return functools.partial(_with_pos_embed_resampled, filter_fn)
    return filter_fn


def _with_pos_embed_resampled(filter_fn: Callable[[Dict[str, Tensor], nn.Module], Dict[str, Tensor]],
                              state_dict: Dict[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """``filter_fn``'s state_dict, its ``pos_embed`` ``(1, P, C)`` (no prefix token) resampled to ``model``'s grid."""
    state_dict = dict(filter_fn(state_dict, model))
    pos_embed = state_dict.get('pos_embed')
    if pos_embed is not None and pos_embed.shape[1] != model.pos_embed.shape[1]:
        state_dict['pos_embed'] = resample_abs_pos_embed(pos_embed, list(model.patch_embed.grid_size),
                                                         num_prefix_tokens=0)
    return state_dict


def load_timm_checkpoint(model: VisionTransformer, checkpoint_path: str, model_name: str) -> None:
    """Load a timm checkpoint file: a state_dict (``.pth``/``.safetensors``) or an original ViT ``.npz``.

    A state_dict file (or a dict with ``model``/``state_dict``) is read with ``weights_only=True``
    and loaded by :func:`load_timm_state_dict`. An ``.npz`` file (Google's ViT, R50+ViT hybrid and
    AugReg releases) is read by timm's ``model.load_pretrained``, which maps its arrays and resizes
    the position embeddings as timm does for those files; an ``.npz`` with more blocks than the
    model gives its first ones, as in timm. Either way the classifier is dropped when its shape
    differs from the model's (e.g. ``num_classes=0`` or another label set), and any other
    difference raises one ``ValueError`` naming the file and what does not fit (the first
    mismatched keys); the model is changed only when the file fits.
    """
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f'timm checkpoint file not found: {checkpoint_path}')
    if os.path.splitext(checkpoint_path)[-1].lower() == '.npz':
        _load_fitting(model, _read_npz(model, str(checkpoint_path), model_name), model_name, checkpoint_path)
    else:
        load_timm_state_dict(model, read_state_dict(str(checkpoint_path)), model_name, checkpoint_path)


def load_timm_state_dict(model: VisionTransformer, state_dict: Dict[str, Tensor], model_name: str,
                         source: str = 'state_dict') -> None:
    """Load a state_dict by timm's names, position (and patch) embeddings resized by timm's filter for ``model_name``.

    The resizing is exactly what ``timm.create_model(..., pretrained=True,
    pretrained_cfg_overlay=dict(file=...))`` does. The classifier is dropped when its shape differs
    from the model's; any other difference raises one ``ValueError`` naming ``source`` (the file or
    URL the weights came from) and the first mismatched, missing and unexpected keys; the model is
    changed only when the state_dict fits.
    """
    try:
        filtered = checkpoint_filter(model_name)(state_dict, model)
    except _FIT_ERRORS as error:
        raise ValueError(f'checkpoint {source} does not fit {model_name}: {error}') from error
    _load_fitting(model, filtered, model_name, source)


def read_state_dict(checkpoint_path: str) -> Dict[str, Tensor]:
    """The state_dict of a ``.pth``/``.safetensors`` file (or its ``model``/``state_dict``), read ``weights_only``.

    A file that is not one (empty, cut short, text, a list, a dict of other things) raises
    :class:`~dcal_plugin.core.checkpoint_file.CheckpointFileError` saying what it is.
    """
    check_checkpoint_file(checkpoint_path, STATE_DICT_FILE)
    try:
        state_dict = load_state_dict(checkpoint_path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:  # timm re-raises torch's refusal as a RuntimeError
        if isinstance(error, RuntimeError) and 'weights_only' not in str(error):
            raise
        raise ValueError(f'{checkpoint_path} was refused by torch.load(weights_only=True): it holds objects besides '
                         'tensors and plain data, and unpickling those could run code stored in the file; save the '
                         f'state_dict alone (torch: {str(error).splitlines()[0]})') from error
    except AttributeError:  # timm's reader found no dict to take the state_dict from
        check_contents(torch.load(checkpoint_path, map_location='cpu', weights_only=True), checkpoint_path,
                       STATE_DICT_FILE)
        raise
    others = [key for key, value in state_dict.items() if not isinstance(value, Tensor)]
    if others:
        raise CheckpointFileError(f'{checkpoint_path} holds a dict with entries that are not tensors '
                                  f'({", ".join(map(repr, others[:5]))}); expected {STATE_DICT_FILE}')
    return state_dict


def check_fits(state_dict: Dict[str, Tensor], expected: Dict[str, Tensor], what: str) -> None:
    """Raise one ``ValueError`` naming ``what`` and the mismatched, missing and unexpected keys, unless they fit."""
    problems = _mismatches(state_dict, expected)
    if problems:
        raise ValueError(f'{what}: ' + '; '.join(problems))


def _load_fitting(model: VisionTransformer, state_dict: Dict[str, Tensor], model_name: str, source: str) -> None:
    """Load timm-named weights, a classifier of another shape dropped, once they fit the model (else ``ValueError``)."""
    expected = model.state_dict()
    for key in _CLASSIFIER_KEYS:
        if key in state_dict and (key not in expected or state_dict[key].shape != expected[key].shape):
            del state_dict[key]
    check_fits(state_dict, expected, f'checkpoint {source} does not match {_describe(model, model_name)}')
    model.load_state_dict(state_dict, strict=False)


def _read_npz(model: VisionTransformer, checkpoint_path: str, model_name: str) -> Dict[str, Tensor]:
    """The parameters timm's ``load_pretrained`` writes from an ``.npz`` into a copy of ``model``, by timm's names."""
    reader = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in reader.parameters():
            parameter.fill_(float('nan'))  # marks what it leaves unwritten (a classifier of another size, layer scale)
    try:
        reader.load_pretrained(checkpoint_path)
    except _FIT_ERRORS as error:
        raise ValueError(f'checkpoint {checkpoint_path} does not fit {_describe(model, model_name)}: '
                         f'timm\'s .npz reader raised {type(error).__name__}: {error}') from error
    return {name: value.detach() for name, value in reader.named_parameters() if not value.isnan().all()}


def _describe(model: VisionTransformer, model_name: str) -> str:
    """``model_name`` with the sizes a checkpoint must fit."""
    depth = len(model.blocks) if hasattr(model, 'blocks') else sum(len(stage.blocks) for stage in model.layers)
    return (f'{model_name} (img_size={tuple(model.patch_embed.img_size)}, depth={depth}, '
            f'embed_dim={model.embed_dim}, num_classes={model.num_classes})')


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
