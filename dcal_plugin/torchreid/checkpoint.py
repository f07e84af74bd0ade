"""torchreid checkpoints (``model.pth.tar-N``): written whole or not at all, read under ``weights_only`` with clear
errors.

``DCALEngine`` writes ``rank1`` as a Python float, so its checkpoints are plain data that
torchreid's own loaders read as they are. Checkpoints written before (and by torchreid's own
engines) hold ``rank1`` as a NumPy scalar, which ``torch.load(weights_only=True)`` refuses; the
readers here accept both: for the duration of one call exactly NumPy's scalar reconstructor and
the float dtypes ``rank1`` carries are allowed. Loading stays ``weights_only`` (no code can run
from a checkpoint) and nothing is changed globally.
"""
import glob
import io
import os.path as osp
from typing import Optional

import numpy
import torch
import torchreid
from torch import nn

from ..atomic_file import write_atomically
from ..core.checkpoint import check_fits
from ..core.checkpoint_file import latest_complete_checkpoint, load_checkpoint_file

CHECKPOINT_GLOBALS = (numpy._core.multiarray.scalar, numpy.dtype,
                      numpy.dtypes.Float32DType, numpy.dtypes.Float64DType)
CHECKPOINT_PREFIX = 'model.pth.tar-'  # torchreid's name of the checkpoint after epoch N: model.pth.tar-N
BEST_CHECKPOINT = 'model-best.pth.tar'
LAST_CHECKPOINT = 'last_checkpoint'  # names the latest checkpoint of the folder, as mmengine's does
RESUME_KEYS = ('state_dict', 'optimizer', 'scheduler', 'epoch')
RESUME_FILE = 'a torchreid checkpoint to resume (a dict with "state_dict", "optimizer", "scheduler" and "epoch")'
WEIGHTS_FILE = 'a torchreid checkpoint or a state_dict'
CLASSIFIER_KEYS = ('classifier.weight', 'classifier.bias')  # DCALReID's ID classifiers, free to differ


def save_checkpoint(state: dict, model_dir: str, is_best: bool = False) -> str:
    """torchreid's ``save_checkpoint`` made atomic: ``model.pth.tar-{epoch}``, the best's copy, then
    ``last_checkpoint``.

    Each file holds its old content or all of the new (:func:`~dcal_plugin.atomic_file.write_atomically`),
    so a crash never leaves a partial checkpoint, nor a ``last_checkpoint`` naming one. Returns the path.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = osp.join(model_dir, f'{CHECKPOINT_PREFIX}{state["epoch"]}')
    write_atomically(path, buffer.getvalue())
    print(f'Checkpoint saved to "{path}"')
    if is_best:
        write_atomically(osp.join(model_dir, BEST_CHECKPOINT), buffer.getvalue())
    write_atomically(osp.join(model_dir, LAST_CHECKPOINT), path)
    return path


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The complete checkpoint ``model_dir/last_checkpoint`` names, else the newest complete ``model.pth.tar-N``
    there."""
    return latest_complete_checkpoint(osp.join(model_dir, LAST_CHECKPOINT),
                                      glob.glob(osp.join(model_dir, CHECKPOINT_PREFIX + '*')))


def resume_from_checkpoint(fpath: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: torch.optim.lr_scheduler.LRScheduler,
                           grad_scaler: Optional[torch.amp.GradScaler] = None) -> int:
    """torchreid's ``resume_from_checkpoint``: restore model, optimizer, scheduler (and loss scale); return the start
    epoch.

    A file that is no such checkpoint (empty, cut short, text, a list, a dict without the keys)
    raises ``CheckpointFileError`` saying what it is.
    """
    with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
        checkpoint = load_checkpoint_file(fpath, RESUME_FILE, RESUME_KEYS)
        start_epoch = torchreid.utils.resume_from_checkpoint(fpath, model, optimizer=optimizer, scheduler=scheduler)
    if grad_scaler is not None and 'grad_scaler' in checkpoint:
        grad_scaler.load_state_dict(checkpoint['grad_scaler'])
    return start_epoch


def load_weights(model: nn.Module, fpath: str) -> None:
    """torchreid's ``load_pretrained_weights``: copy the tensors of a torchreid checkpoint into the model.

    The ID classifiers may differ (another data set's identities); every other tensor must fit,
    else a ``ValueError`` names what differs: torchreid would load what matches, warn, and go on
    with random weights for the rest (a test of random weights).
    """
    with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
        loaded = load_checkpoint_file(fpath, WEIGHTS_FILE)
        weights = loaded.get('state_dict', loaded)
        plain = {key[len('module.'):] if key.startswith('module.') else key: value for key, value in weights.items()}
        check_fits({key: value for key, value in plain.items() if not key.endswith(CLASSIFIER_KEYS)},
                   {key: value for key, value in model.state_dict().items() if not key.endswith(CLASSIFIER_KEYS)},
                   f'{fpath} does not hold weights of this {type(model).__name__}')
        torchreid.utils.load_pretrained_weights(model, fpath)
