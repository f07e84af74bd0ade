"""``PlainCheckpointHook``: checkpoints of plain data that every ``torch.load(weights_only=True)`` reads.

mmengine's checkpoints hold the message hub's ``HistoryBuffer`` objects (NumPy arrays inside) and
NumPy scalars, which torch >= 2.6 refuses to load by default; so mmpretrain's own ``test.py``,
``load_from``, ``get_model``, the inferencer and a plain ``Runner``'s resume fail on them. This
hook stores them as plain data on save and restores them on load: nothing is allow-listed and
nothing needs full unpickling.
"""
from collections import OrderedDict
from typing import Any, Iterable, Tuple

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmpretrain.registry import HOOKS

HISTORY_BUFFER = '__history_buffer__'  # marks a HistoryBuffer stored as {'log_history', 'count_history', 'max_length'}
NDARRAY = '__ndarray__'  # marks a NumPy array stored as a tensor


def to_plain(value: Any) -> Any:
    """``value`` with every HistoryBuffer, NumPy array and NumPy scalar replaced by tensors, containers and scalars."""
    if isinstance(value, HistoryBuffer):
        log_history, count_history = value.data
        return {HISTORY_BUFFER: dict(log_history=log_history.tolist(), count_history=count_history.tolist(),
                                     max_length=int(value.max_length))}
    if isinstance(value, np.ndarray):
        return {NDARRAY: torch.from_numpy(value.copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):  # OrderedDicts stay ordered dicts; other dict types (ConfigDict) become dicts
        return _same_dict_kind(value, ((key, to_plain(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(item) for item in value)
    return value


def from_plain(value: Any) -> Any:
    """The inverse of :func:`to_plain`: HistoryBuffers and NumPy arrays back from their plain form."""
    if isinstance(value, dict):
        if set(value) == {HISTORY_BUFFER}:
            return HistoryBuffer(**value[HISTORY_BUFFER])
        if set(value) == {NDARRAY}:
            return value[NDARRAY].numpy()
        return _same_dict_kind(value, ((key, from_plain(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return type(value)(from_plain(item) for item in value)
    return value


def _same_dict_kind(original: dict, items: Iterable[Tuple[Any, Any]]) -> dict:
    """An ``OrderedDict`` of ``items`` if ``original`` is one, else a ``dict``."""
    return OrderedDict(items) if isinstance(original, OrderedDict) else dict(items)


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Write checkpoints as plain data (:func:`to_plain`) and read them back (:func:`from_plain`) on resume.

    Priority ``LOWEST``: on save it runs after every hook that adds to the checkpoint. DCAL's
    runtime base registers it; add ``dict(type='PlainCheckpointHook')`` to ``custom_hooks`` of a
    config of your own.
    """

    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Replace the checkpoint's entries but the weights (tensors already) by their plain form, in place."""
        for key in list(checkpoint):
            if key != 'state_dict':  # kept as it is: its OrderedDict carries the modules' _metadata versions
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore HistoryBuffers and arrays before the runner hands the message hub its state."""
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = from_plain(checkpoint[key])
