"""``DCALRunner``, the model of a finished run, and the message for checkpoints written before they were plain data.

Checkpoints of DCAL runs are plain data (:class:`~dcal_plugin.mmpretrain.PlainCheckpointHook`), so
every stock loader reads them with torch's default ``weights_only=True``. Checkpoints written
before (they hold mmengine's ``HistoryBuffer``) are refused by torch; the tools say how to convert
such a file once (``tools/publish_model.py --trust-pickle``).
"""
import contextlib
import os.path as osp
import pickle
import uuid
from typing import Iterator, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmpretrain.registry import MODELS
from torch import nn

from ..core.checkpoint import check_fits
from ..core.checkpoint_file import load_checkpoint_file
from .unwrap import unwrap


@contextlib.contextmanager
def old_checkpoint_help(path: str) -> Iterator[None]:
    """Turn torch's refusal of a checkpoint written before checkpoints were plain data into what to do about it."""
    try:
        yield
    except pickle.UnpicklingError as error:
        raise ValueError(
            f'{path} was refused: it holds objects besides tensors and plain data, which torch.load(weights_only=True) '
            'does not read because unpickling them can run code stored in the file. A checkpoint written by '
            'dcal-plugin before its checkpoints were plain data looks like this. Only if your own run wrote this '
            'file, convert it once: python tools/publish_model.py --trust-pickle '
            f'{path} OUT.pth; --trust-pickle RUNS THE CODE THE FILE HOLDS: never use it on a file from anyone else '
            f'(torch: {str(error).splitlines()[0]})') from error


@RUNNERS.register_module()
class DCALRunner(Runner):
    """mmengine's ``Runner`` with a unique default experiment name.

    mmengine names the logger and visualizer instances after the experiment, by default the config
    name plus a timestamp in seconds, so two runners built in one process within the same second
    (a sweep, an ablation, tests) would share one visualizer and log into the first run's folder.
    A name given in the config (``experiment_name``) is kept.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('experiment_name') is None:
            cfg = kwargs.get('cfg')
            stem = osp.splitext(osp.basename(cfg.filename))[0] if cfg is not None and cfg.filename else 'dcal'
            kwargs['experiment_name'] = f'{stem}_{uuid.uuid4().hex[:8]}'  # mmengine appends the timestamp
        super().__init__(*args, **kwargs)


def build_trained_model(cfg: Config, checkpoint: str,
                        strict: bool = False) -> Tuple[nn.Module, Optional[Sequence[str]]]:
    """The config's model in eval mode with the weights of a checkpoint this project's runs wrote, and its class names.

    ``strict``: a checkpoint whose keys or shapes differ from the model's raises a ``RuntimeError``
    naming them (mmengine's default, False, only logs a warning).
    """
    init_default_scope('mmpretrain')
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(model_cfg)
    with old_checkpoint_help(str(checkpoint)):
        loaded = load_checkpoint(model, str(checkpoint), map_location='cpu', strict=strict)
    return model.eval(), loaded.get('meta', {}).get('dataset_meta', {}).get('classes')


def check_trained_checkpoint(model: nn.Module, checkpoint: str) -> None:
    """Raise ``ValueError`` naming what differs unless ``checkpoint`` holds weights of exactly ``model`` (all keys and
    shapes)."""
    with old_checkpoint_help(str(checkpoint)):
        loaded = load_checkpoint_file(str(checkpoint), 'a checkpoint of this config\'s model (tools/train.py, '
                                      'tools/publish_model.py)', ('state_dict',))
    plain = unwrap(model)
    check_fits(loaded['state_dict'], plain.state_dict(),
               f'{checkpoint} does not hold the weights of this config\'s model {type(plain).__name__}')


def use_gloo_without_cuda(cfg: Config) -> None:
    """Let ``--launcher pytorch`` run on CPU-only machines (mmengine's launcher assumes GPUs).

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` and wraps the model in DDP with
    ``device_ids=[LOCAL_RANK]``; without CUDA this joins the process group with gloo first (the
    Runner then skips its own initialisation) and asks for a device-less DDP wrapper.
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                 **cfg.get('model_wrapper_cfg', None) or {})


def build_runner(cfg: Config) -> Runner:
    """The config's ``runner_type`` (DCAL configs: ``DCALRunner``), else mmengine's Runner."""
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
