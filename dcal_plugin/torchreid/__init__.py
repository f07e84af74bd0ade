"""DCAL for torchreid. Importing this package registers the models ``dcal_*`` and the datasets ``veri776``,
``msmt17_trainval``."""
from .checkpoint import load_weights, resume_from_checkpoint
from .config import get_default_config
from .datasets import MSMT17TrainVal, VeRi776
from .engine import DCALEngine
from .evaluation import RankResult, chance_level, evaluate_branches
from .losses import SoftMarginTripletLoss
from .model import BNNeck, DCALReID, build_dcal_reid
from .optim import build_optimizer, build_scheduler
from .registry import MODEL_NAMES, register_datasets, register_models
from .runner import build_datamanager, build_engine, run
from .transforms import transreid_train_transform, use_transreid_train_transform

register_models()
register_datasets()

__all__ = [
    'BNNeck', 'DCALEngine', 'DCALReID', 'MODEL_NAMES', 'MSMT17TrainVal', 'RankResult', 'SoftMarginTripletLoss',
    'VeRi776', 'build_datamanager', 'build_dcal_reid', 'build_engine', 'build_optimizer', 'build_scheduler',
    'chance_level', 'evaluate_branches', 'get_default_config', 'load_weights', 'register_datasets', 'register_models',
    'resume_from_checkpoint', 'run', 'transreid_train_transform', 'use_transreid_train_transform',
]
