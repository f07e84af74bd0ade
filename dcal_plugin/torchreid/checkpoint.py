"""Reading torchreid checkpoints (``model.pth.tar-N``) under torch's ``weights_only`` loading, old ones included.

``DCALEngine`` writes ``rank1`` as a Python float, so its checkpoints are plain data that
torchreid's own loaders read as they are. Checkpoints written before (and by torchreid's own
engines) hold ``rank1`` as a NumPy scalar, which ``torch.load(weights_only=True)`` refuses; these
two functions read both: for the duration of one torchreid call exactly NumPy's scalar
reconstructor and the float dtypes ``rank1`` carries are allowed. Loading stays ``weights_only``
(no code can run from a checkpoint) and nothing is changed globally.
"""
import numpy
import torch
import torchreid
from torch import nn

CHECKPOINT_GLOBALS = (numpy._core.multiarray.scalar, numpy.dtype,
                      numpy.dtypes.Float32DType, numpy.dtypes.Float64DType)


def resume_from_checkpoint(fpath: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: torch.optim.lr_scheduler.LRScheduler) -> int:
    """torchreid's ``resume_from_checkpoint``: restore model, optimizer and scheduler; return the epoch to start at."""
    with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
        return torchreid.utils.resume_from_checkpoint(fpath, model, optimizer=optimizer, scheduler=scheduler)


def load_weights(model: nn.Module, fpath: str) -> None:
    """torchreid's ``load_pretrained_weights``: copy the matching tensors of a torchreid checkpoint into the model."""
    with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
        torchreid.utils.load_pretrained_weights(model, fpath)
