"""Reading torchreid checkpoints (``model.pth.tar-N``) under torch's ``weights_only`` loading.

torchreid saves ``rank1`` as a numpy scalar, which ``torch.load(weights_only=True)`` (the default
from torch 2.6) refuses, so torchreid's own ``resume_from_checkpoint`` and
``load_pretrained_weights`` fail on the checkpoints it writes. This is the one place that widens
the allowlist: for the duration of one torchreid call, exactly numpy's scalar reconstructor and
the float dtypes ``rank1`` carries are allowed. Loading stays ``weights_only`` (no code can run
from a checkpoint); nothing is changed globally; timm weights are read by the core, untouched.
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
