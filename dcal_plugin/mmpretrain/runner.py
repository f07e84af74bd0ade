"""Reading this project's own mmengine checkpoints on torch >= 2.6, and ``DCALRunner`` that resumes through it.

torch >= 2.6 loads with ``weights_only=True`` by default, and an mmengine checkpoint holds more than
tensors (the message hub's ``HistoryBuffer``, NumPy scalars, ``builtins.getattr`` for NumPy
dtypes), so resuming or testing a run's checkpoint fails. Allow-listing those globals would allow
them for every file. Instead, paths prefixed with :data:`OWN_CHECKPOINT` are read by
:func:`load_own_checkpoint` with ``weights_only=False``, and only three callers use the prefix:
``DCALRunner.resume``, ``tools/test.py`` and :func:`build_trained_model` (``tools/vis_rollout.py``,
``tools/localization.py``), all on checkpoints written by ``tools/train.py``. Every other load (timm weights, ``load_from``, ``init_cfg``) keeps
``weights_only=True``. Resume and test only checkpoints that your own runs wrote.
"""
import os.path as osp
import uuid
from typing import Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from mmpretrain.registry import MODELS
from torch import nn

OWN_CHECKPOINT = 'dcal-own-checkpoint://'


def load_own_checkpoint(filename: str, map_location=None) -> dict:
    """Fully unpickle ``dcal-own-checkpoint://PATH`` (``weights_only=False``): a checkpoint this project's runs wrote."""
    return torch.load(filename[len(OWN_CHECKPOINT):], map_location=map_location, weights_only=False)


CheckpointLoader.register_scheme(prefixes=OWN_CHECKPOINT, loader=load_own_checkpoint, force=True)


@RUNNERS.register_module()
class DCALRunner(Runner):
    """A ``Runner`` whose ``resume`` (``--resume``, ``resume=True``) reads the checkpoint through :func:`load_own_checkpoint`.

    Its default experiment name is unique: mmengine names the logger and visualizer instances after
    the experiment, by default the config name plus a timestamp in seconds, so two runners built in
    one process within the same second (a sweep, an ablation, tests) would share one visualizer and
    log into the first run's folder. A name given in the config (``experiment_name``) is kept.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('experiment_name') is None:
            cfg = kwargs.get('cfg')
            stem = osp.splitext(osp.basename(cfg.filename))[0] if cfg is not None and cfg.filename else 'dcal'
            kwargs['experiment_name'] = f'{stem}_{uuid.uuid4().hex[:8]}'  # mmengine appends the timestamp
        super().__init__(*args, **kwargs)

    def resume(self, filename: str, *args, **kwargs) -> None:
        """Resume from a checkpoint written by a run of this project (see the module docstring)."""
        super().resume(OWN_CHECKPOINT + str(filename), *args, **kwargs)


def build_trained_model(cfg: Config, checkpoint: str) -> Tuple[nn.Module, Optional[Sequence[str]]]:
    """The config's model in eval mode with the weights of a checkpoint this project's runs wrote, and its class names."""
    init_default_scope('mmpretrain')
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(model_cfg)
    loaded = load_checkpoint(model, OWN_CHECKPOINT + str(checkpoint), map_location='cpu')
    return model.eval(), loaded.get('meta', {}).get('dataset_meta', {}).get('classes')
