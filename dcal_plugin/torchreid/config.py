"""The yacs configuration of ``tools/train_reid.py``: torchreid's keys, the paper's Re-ID recipe (METHOD §7) as defaults."""
from typing import Any, Dict

from yacs.config import CfgNode

from dcal_plugin.core import LOG_VAR_BOUNDS, DCALViT

from .model import REID_DROP_PATH_RATE, REID_LOCAL_QUERY_RATIO
from .registry import timm_model_name

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def get_default_config() -> CfgNode:
    """Defaults: DeiT-Tiny DCAL on VeRi-776 at 256×256, SGD 0.008, cosine over 120 epochs, 16 ids × 4 images."""
    cfg = CfgNode()

    cfg.model = CfgNode()
    cfg.model.name = 'dcal_deit_tiny'  # one of dcal_plugin.torchreid.MODEL_NAMES
    cfg.model.checkpoint = ''  # local timm weights for the backbone (e.g. ImageNet); '' trains from scratch
    cfg.model.pretrained = False  # True: timm's weights of the paper's tag, through timm's hub (instead of checkpoint)
    cfg.model.load_weights = ''  # torchreid checkpoint whose matching tensors are loaded (e.g. for test.evaluate)
    cfg.model.resume = ''  # torchreid checkpoint to resume training from (model, optimizer, scheduler, epoch)
    # Every option of the core DCALViT by its name (its docstring says what each does), the Re-ID R.
    for name, default in DCALViT.option_defaults().items():
        cfg.model[name] = default
    cfg.model.local_query_ratio = REID_LOCAL_QUERY_RATIO
    cfg.model.drop_path_rate = REID_DROP_PATH_RATE
    cfg.model.timm_kwargs = CfgNode(new_allowed=True)  # extra timm.create_model arguments (e.g. depth, patch_size)

    cfg.data = CfgNode()
    cfg.data.root = 'reid-data'
    cfg.data.sources = ['veri776']
    cfg.data.targets = ['veri776']
    cfg.data.workers = 4
    cfg.data.height = 256
    cfg.data.width = 256
    cfg.data.combineall = False
    # TransReID's flip, pad-and-crop and random erasing, as torchreid names them ('random_crop'
    # enlarges by 1/8 and crops back: torchreid's stand-in for padding 10).
    cfg.data.transforms = ['random_flip', 'random_crop', 'random_erase']
    cfg.data.norm_mean = list(IMAGENET_MEAN)
    cfg.data.norm_std = list(IMAGENET_STD)
    cfg.data.save_dir = 'log'

    cfg.sampler = CfgNode()
    cfg.sampler.train_sampler = 'RandomIdentitySampler'
    cfg.sampler.num_instances = 4  # images per identity in a batch

    cfg.train = CfgNode()
    cfg.train.optim = 'sgd'  # 'sgd' or 'adamw'
    cfg.train.lr = 0.008
    cfg.train.weight_decay = 1e-4
    cfg.train.max_epoch = 120
    cfg.train.start_epoch = 0
    cfg.train.batch_size = 64  # 16 identities x 4 images
    cfg.train.fixbase_epoch = 0
    cfg.train.open_layers = ['sa_classifier', 'glca_classifier']
    cfg.train.lr_scheduler = 'cosine'  # torchreid's: 'single_step', 'multi_step' or 'cosine'
    cfg.train.stepsize = [40]
    cfg.train.gamma = 0.1
    cfg.train.warmup_epochs = 5  # linear warm-up (TransReID)
    cfg.train.warmup_factor = 0.01  # warm-up starts at warmup_factor * lr
    cfg.train.print_freq = 20
    cfg.train.seed = 1
    cfg.train.amp = ''  # mixed precision of the train step: 'bfloat16', 'float16' (dynamic loss scale) or '' (float32)
    cfg.train.compile = False  # True: torch.compile the model's forward (nn.Module.compile; state_dict keys unchanged)

    cfg.sgd = CfgNode()
    cfg.sgd.momentum = 0.9
    cfg.adam = CfgNode()
    cfg.adam.beta1 = 0.9
    cfg.adam.beta2 = 0.999

    cfg.loss = CfgNode()
    cfg.loss.softmax = CfgNode()
    cfg.loss.softmax.label_smooth = True
    cfg.loss.triplet = CfgNode()
    cfg.loss.triplet.margin = 0.3
    cfg.loss.triplet.weight_t = 1.0
    cfg.loss.triplet.weight_x = 1.0
    cfg.loss.uncertainty = CfgNode()
    cfg.loss.uncertainty.log_var_bounds = list(LOG_VAR_BOUNDS)  # box of the log-variances; None: unbounded

    cfg.test = CfgNode()
    cfg.test.batch_size = 128
    cfg.test.dist_metric = 'euclidean'
    cfg.test.normalize_feature = True  # L2-normalised features, as TransReID tests
    cfg.test.ranks = [1, 5, 10, 20]
    cfg.test.evaluate = False  # test only
    cfg.test.eval_freq = -1
    cfg.test.start_eval = 0
    cfg.test.rerank = False
    cfg.test.visrank = False
    cfg.test.visrank_topk = 10
    cfg.test.use_metric_cuhk03 = False

    cfg.use_gpu = False
    return cfg


def model_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of ``build_dcal_reid`` except ``num_classes``."""
    bounds = cfg.loss.uncertainty.log_var_bounds
    return {
        'model_name': timm_model_name(cfg.model.name),
        'img_size': (cfg.data.height, cfg.data.width),
        'checkpoint_path': cfg.model.checkpoint or None,
        'pretrained': cfg.model.pretrained,
        'drop_path_rate': cfg.model.drop_path_rate,
        'log_var_bounds': None if bounds is None else tuple(bounds),
        **{name: cfg.model[name] for name in DCALViT.option_defaults()},
        **dict(cfg.model.timm_kwargs),
    }


def imagedata_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of ``torchreid.data.ImageDataManager``."""
    return {
        'root': cfg.data.root,
        'sources': cfg.data.sources,
        'targets': cfg.data.targets,
        'height': cfg.data.height,
        'width': cfg.data.width,
        'transforms': cfg.data.transforms,
        'norm_mean': cfg.data.norm_mean,
        'norm_std': cfg.data.norm_std,
        'use_gpu': cfg.use_gpu,
        'combineall': cfg.data.combineall,
        'batch_size_train': cfg.train.batch_size,
        'batch_size_test': cfg.test.batch_size,
        'workers': cfg.data.workers,
        'num_instances': cfg.sampler.num_instances,
        'train_sampler': cfg.sampler.train_sampler,
    }


def optimizer_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of ``build_optimizer`` except the model."""
    return {
        'optim': cfg.train.optim,
        'lr': cfg.train.lr,
        'weight_decay': cfg.train.weight_decay,
        'momentum': cfg.sgd.momentum,
        'adam_beta1': cfg.adam.beta1,
        'adam_beta2': cfg.adam.beta2,
    }


def scheduler_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of ``build_scheduler`` except the optimizer."""
    return {
        'lr_scheduler': cfg.train.lr_scheduler,
        'max_epoch': cfg.train.max_epoch,
        'warmup_epochs': cfg.train.warmup_epochs,
        'warmup_factor': cfg.train.warmup_factor,
        'stepsize': cfg.train.stepsize,
        'gamma': cfg.train.gamma,
    }


def engine_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of ``DCALEngine`` besides data manager, model, optimizer and scheduler."""
    return {
        'margin': cfg.loss.triplet.margin,
        'weight_t': cfg.loss.triplet.weight_t,
        'weight_x': cfg.loss.triplet.weight_x,
        'use_gpu': cfg.use_gpu,
        'label_smooth': cfg.loss.softmax.label_smooth,
        'amp_dtype': cfg.train.amp or None,
    }


def engine_run_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of torchreid's ``Engine.run``."""
    return {
        'save_dir': cfg.data.save_dir,
        'max_epoch': cfg.train.max_epoch,
        'start_epoch': cfg.train.start_epoch,
        'fixbase_epoch': cfg.train.fixbase_epoch,
        'open_layers': cfg.train.open_layers,
        'start_eval': cfg.test.start_eval,
        'eval_freq': cfg.test.eval_freq,
        'test_only': cfg.test.evaluate,
        'print_freq': cfg.train.print_freq,
        'dist_metric': cfg.test.dist_metric,
        'normalize_feature': cfg.test.normalize_feature,
        'visrank': cfg.test.visrank,
        'visrank_topk': cfg.test.visrank_topk,
        'use_metric_cuhk03': cfg.test.use_metric_cuhk03,
        'ranks': cfg.test.ranks,
        'rerank': cfg.test.rerank,
    }
