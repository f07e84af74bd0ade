"""Reading this project's own mmengine checkpoints on torch >= 2.6, and ``DCALRunner`` that resumes through it.

torch >= 2.6 loads with ``weights_only=True`` by default, and an mmengine checkpoint holds more than
tensors (the message hub's ``HistoryBuffer``, NumPy scalars, ``builtins.getattr`` for NumPy
dtypes), so resuming or testing a run's checkpoint fails. Allow-listing those globals would allow
them for every file. Instead, paths prefixed with :data:`OWN_CHECKPOINT` are read by
:func:`load_own_checkpoint` with ``weights_only=False``, and only three callers use the prefix:
``DCALRunner.resume``, ``tools/test.py`` and ``tools/vis_rollout.py``, all on checkpoints written by
``tools/train.py``. Every other load (timm weights, ``load_from``, ``init_cfg``) keeps
``weights_only=True``. Resume and test only checkpoints that your own runs wrote.
"""
import torch
from mmengine.registry import RUNNERS
from mmengine.runner import CheckpointLoader, Runner

OWN_CHECKPOINT = 'dcal-own-checkpoint://'


def load_own_checkpoint(filename: str, map_location=None) -> dict:
    """Fully unpickle ``dcal-own-checkpoint://PATH`` (``weights_only=False``): a checkpoint this project's runs wrote."""
    return torch.load(filename[len(OWN_CHECKPOINT):], map_location=map_location, weights_only=False)


CheckpointLoader.register_scheme(prefixes=OWN_CHECKPOINT, loader=load_own_checkpoint, force=True)


@RUNNERS.register_module()
class DCALRunner(Runner):
    """A ``Runner`` whose ``resume`` (``--resume``, ``resume=True``) reads the checkpoint through :func:`load_own_checkpoint`."""

    def resume(self, filename: str, *args, **kwargs) -> None:
        """Resume from a checkpoint written by a run of this project (see the module docstring)."""
        super().resume(OWN_CHECKPOINT + str(filename), *args, **kwargs)
