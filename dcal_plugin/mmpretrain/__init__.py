"""MMPretrain adapter: importing it registers DCAL's backbone, head, metric and hooks in mmpretrain's registries,
and the shipped FGVC configs in its ``ModelHub`` (``mmpretrain.list_models('*dcal*')``, ``get_model(NAME)``).

Use ``custom_imports = dict(imports=['dcal_plugin.mmpretrain'], allow_failed_imports=False)`` in a config.
"""
from .backbone import DCALVisionTransformer
from .checkpoint_hook import DCALCheckpointHook
from .classifier import DCALClassifier
from .dataset_check_hook import DatasetCheckHook, check_image_files
from .head import DCALClsHead
from .load_image import DCALLoadImageFromFile
from .metrics import DCALBranchAccuracy
from .model_index import register_model_index
from .non_finite_loss_hook import NonFiniteLossHook
from .optim_constructor import DCALOptimWrapperConstructor
from .plain_checkpoint_hook import PlainCheckpointHook
from .rollout_hook import AttentionRolloutHook, draw_rollouts
from .runner import DCALRunner, build_trained_model
from .seed_hook import EpochSeedHook
from .weight_drift_hook import WeightDriftHook
from .work_dir_lock_hook import WorkDirLockHook

__all__ = [
    'AttentionRolloutHook', 'DCALBranchAccuracy', 'DCALCheckpointHook', 'DCALClassifier', 'DCALClsHead',
    'DCALLoadImageFromFile', 'DCALOptimWrapperConstructor', 'DCALRunner', 'DCALVisionTransformer', 'DatasetCheckHook',
    'EpochSeedHook', 'NonFiniteLossHook', 'PlainCheckpointHook', 'WeightDriftHook', 'WorkDirLockHook',
    'build_trained_model', 'check_image_files', 'draw_rollouts', 'register_model_index',
]

register_model_index()
