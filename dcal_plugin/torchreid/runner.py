"""One Re-ID run from a config, as torchreid's ``scripts/main.py`` does it: data, model, optimizer, engine, test."""
import os.path as osp
from typing import Dict

import torch
import torchreid
from torch import nn
from yacs.config import CfgNode

from .checkpoint import latest_checkpoint, load_weights, resume_from_checkpoint
from .config import (
    AUTO, engine_kwargs, engine_run_kwargs, imagedata_kwargs, local_weights, model_kwargs, optimizer_kwargs,
    scheduler_kwargs, uses_hub_weights)
from .engine import DCALEngine
from .evaluation import RankResult, chance_level, check_evaluable, evaluate_branches, format_results
from .model import DCALReID, build_dcal_reid
from .optim import build_optimizer, build_scheduler
from .registry import timm_model_name
from .transforms import TRANSREID, use_transreid_train_transform


def build_datamanager(cfg: CfgNode) -> torchreid.data.ImageDataManager:
    """torchreid's ``ImageDataManager``; with 'transreid' in ``data.transforms``, TransReID's train transform."""
    datamanager = torchreid.data.ImageDataManager(**imagedata_kwargs(cfg))
    if TRANSREID in cfg.data.transforms:
        use_transreid_train_transform(datamanager, padding=cfg.data.padding)
        print(f'Train transform replaced by TransReID\'s: {datamanager.transform_tr}')
    return datamanager


def build_engine(cfg: CfgNode) -> DCALEngine:
    """torchreid's data manager, the DCAL model (plus ``model.load_weights``), optimizer, scheduler and engine."""
    datamanager = build_datamanager(cfg)
    check_evaluable(datamanager.test_dataset, cfg.test.ranks)
    print(f'Building model: {cfg.model.name} at {cfg.data.height}x{cfg.data.width}')
    print(f'Weights: {weights_source(cfg)}')
    model = build_dcal_reid(num_classes=datamanager.num_train_pids, **model_kwargs(cfg))
    print(f'Model parameters: {sum(p.numel() for p in model.parameters()):,}')
    if cfg.model.load_weights:
        load_weights(model, cfg.model.load_weights)
    model = model.to('cuda' if cfg.use_gpu else 'cpu')
    if cfg.train.compile:
        model.compile()
    optimizer = build_optimizer(model, **optimizer_kwargs(cfg))
    scheduler = build_scheduler(optimizer, **scheduler_kwargs(cfg))
    branches = ['SA'] + [name for name, used in (('GLCA', cfg.model.use_glca), ('PWCA', cfg.model.use_pwca)) if used]
    smoothing = ' with label smoothing' if cfg.loss.softmax.label_smooth else ''
    margin = 'soft-margin' if cfg.loss.triplet.margin is None else f'margin-{cfg.loss.triplet.margin}'
    print(f'Building DCAL engine ({" + ".join(branches)}, cross-entropy{smoothing} + {margin} triplet per branch, '
          'uncertainty-weighted)')
    return DCALEngine(datamanager, data_parallel(model, cfg.use_gpu), optimizer, scheduler=scheduler,
                      **engine_kwargs(cfg))


def weights_source(cfg: CfgNode) -> str:
    """Where the model's weights come from: the file that gives them last, timm's hub, or nowhere (random)."""
    if uses_hub_weights(cfg):
        return f'timm\'s pretrained {timm_model_name(cfg.model.name)} through timm\'s hub (model.pretrained True)'
    local = local_weights(cfg)
    if local is None:
        return 'random initialisation (no model.checkpoint, model.pretrained False)'
    key, path = local
    return f'model.{key} {path}'


def data_parallel(model: DCALReID, use_gpu: bool) -> nn.Module:
    """``nn.DataParallel(model)`` when it trains on more than one visible GPU (as torchreid's main.py), else
    ``model``."""
    if use_gpu and torch.cuda.device_count() > 1:
        print(f'Training on {torch.cuda.device_count()} GPUs with nn.DataParallel')
        return nn.DataParallel(model)
    return model


def run(cfg: CfgNode) -> Dict[str, Dict[str, RankResult]]:
    """Train (unless ``test.evaluate``; from ``model.resume`` if given, or 'auto') and test; print and return the
    results."""
    if cfg.model.resume == AUTO:  # resolved first: a checkpoint found there gives the weights, not timm's hub
        cfg = cfg.clone()
        cfg.model.resume = latest_checkpoint(osp.join(cfg.data.save_dir, 'model')) or ''
    engine = build_engine(cfg)
    start_epoch = cfg.train.start_epoch
    if cfg.model.resume:
        print(f'Resuming from {cfg.model.resume}')
        start_epoch = resume_from_checkpoint(cfg.model.resume, engine.dcal_reid, engine.optimizer, engine.scheduler,
                                             engine.grad_scaler)
    engine.run(**dict(engine_run_kwargs(cfg), start_epoch=start_epoch))
    # each branch scored from the features of the run's final test, with its re-ranking (a run of 0 epochs has none)
    results = engine.branch_results or evaluate_branches(engine, cfg.test.dist_metric, cfg.test.normalize_feature,
                                                         cfg.test.use_metric_cuhk03, cfg.test.rerank)
    chance = {name: chance_level(splits['query'], splits['gallery'])
              for name, splits in engine.datamanager.test_dataset.items()}
    print('\n'.join(format_results(results, cfg.test.ranks, chance, cfg.test.rerank)))
    return results
