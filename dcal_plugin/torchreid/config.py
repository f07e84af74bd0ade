"""The yacs configuration of ``tools/train_reid.py``: torchreid's keys; defaults are the paper's Re-ID recipe
(METHOD §7), and TransReID's ViT baseline (``configs/{VeRi,MSMT17}/vit_base.yml`` of damo-cv/TransReID) where the
paper is silent."""
from typing import Any, Dict, Optional, Tuple

from yacs.config import CfgNode

from dcal_plugin.core import LOG_VAR_BOUNDS, DCALViT

from .model import REID_DROP_PATH_RATE, REID_LOCAL_QUERY_RATIO
from .registry import timm_model_name
from .transforms import TRANSREID

AUTO = 'auto'  # model.resume: the latest complete checkpoint of data.save_dir
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def get_default_config() -> CfgNode:
    """Defaults: DeiT-Tiny DCAL on VeRi-776 at 256×256, SGD 0.008, cosine, 120 epochs, 16 ids × 4 images; TransReID's
    rest."""
    cfg = CfgNode()

    cfg.model = CfgNode()
    cfg.model.name = 'dcal_deit_tiny'  # one of dcal_plugin.torchreid.MODEL_NAMES
    cfg.model.checkpoint = ''  # local timm weights for the backbone (e.g. ImageNet), used instead of model.pretrained
    # True (torchreid's default): timm's weights of the paper's Re-ID tag through timm's hub, unless a local file gives
    # the weights (model.checkpoint, model.load_weights or a model.resume file); offline, an error says what to give.
    # False with no model.checkpoint: the backbone starts from random initialisation
    cfg.model.pretrained = True
    cfg.model.load_weights = ''  # torchreid checkpoint whose matching tensors are loaded (e.g. for test.evaluate)
    # torchreid checkpoint to resume training from (model, optimizer, scheduler, epoch); 'auto': the latest complete
    # one in data.save_dir/model (none there: start afresh)
    cfg.model.resume = ''
    # Every option of the core DCALViT by its name (its docstring says what each does), the Re-ID R.
    for name, default in DCALViT.option_defaults().items():
        cfg.model[name] = default
    cfg.model.local_query_ratio = REID_LOCAL_QUERY_RATIO
    cfg.model.drop_path_rate = REID_DROP_PATH_RATE
    # The retrieval feature SA ‖ GLCA is taken before BNNeck and L2-normalised (TransReID's NECK_FEAT 'before',
    # FEAT_NORM 'yes'): 'each' half separately [ours] or the 'concat'enation
    cfg.model.retrieval_norm = 'each'
    cfg.model.timm_kwargs = CfgNode(new_allowed=True)  # extra timm.create_model arguments (e.g. depth, patch_size)

    cfg.data = CfgNode()
    cfg.data.root = 'reid-data'
    cfg.data.sources = ['veri776']
    cfg.data.targets = ['veri776']
    cfg.data.workers = 4
    cfg.data.height = 256
    cfg.data.width = 256
    # torchreid's: train on train, query and gallery (for msmt17 also val) -- never for test results; MSMT17's
    # train + val, as TransReID trains it, is the dataset 'msmt17_trainval'
    cfg.data.combineall = False
    # 'transreid': TransReID's train transform (flip 0.5, padding 10 then a random crop, random erasing 0.5 with
    # per-pixel noise; dcal_plugin.torchreid.transforms), alone; otherwise torchreid's names (whose 'random_crop'
    # enlarges by 1/8 and crops back half of the time, and 'random_erase' fills with a constant)
    cfg.data.transforms = [TRANSREID]
    cfg.data.padding = 10  # pixels the 'transreid' transform pads on every side before its crop (TransReID's PADDING)
    # [ours for DeiT] ImageNet's statistics, which DeiT was trained with; TransReID normalises every backbone with
    # mean = std = 0.5, which the ViT and R50-ViT configs set (the statistics of Google's ViT weights)
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
    cfg.train.bias_lr_factor = 2.0  # biases train at this times lr (TransReID's BIAS_LR_FACTOR)
    cfg.train.weight_decay_bias = 1e-4  # and with this weight decay (TransReID's WEIGHT_DECAY_BIAS)
    cfg.train.max_epoch = 120
    cfg.train.start_epoch = 0
    cfg.train.batch_size = 64  # 16 identities x 4 images
    cfg.train.fixbase_epoch = 0
    cfg.train.open_layers = ['sa_classifier', 'glca_classifier']
    cfg.train.lr_scheduler = 'cosine'  # torchreid's: 'single_step', 'multi_step' or 'cosine'
    cfg.train.stepsize = [40]
    cfg.train.gamma = 0.1
    cfg.train.warmup_epochs = 5  # linear warm-up (TransReID; its exact per-epoch values differ, see build_scheduler)
    cfg.train.warmup_factor = 0.01  # warm-up starts at warmup_factor * lr
    cfg.train.print_freq = 20
    cfg.train.seed = 1
    # mixed precision of the train step: 'bfloat16', 'float16' (dynamic loss scale) or '' (float32) [ours: TransReID
    # trains under float16 autocast; float32 computes the same on a CPU and a GPU]
    cfg.train.amp = ''
    cfg.train.compile = False  # True: torch.compile the model's forward (nn.Module.compile; state_dict keys unchanged)

    cfg.sgd = CfgNode()
    cfg.sgd.momentum = 0.9
    cfg.adam = CfgNode()
    cfg.adam.beta1 = 0.9
    cfg.adam.beta2 = 0.999

    cfg.loss = CfgNode()
    cfg.loss.softmax = CfgNode()
    cfg.loss.softmax.label_smooth = False  # TransReID's IF_LABELSMOOTH 'off'
    cfg.loss.triplet = CfgNode()
    cfg.loss.triplet.margin = None  # None: soft margin (TransReID's NO_MARGIN True); a number: torchreid's hinge
    cfg.loss.triplet.weight_t = 1.0
    cfg.loss.triplet.weight_x = 1.0
    cfg.loss.uncertainty = CfgNode()
    cfg.loss.uncertainty.log_var_bounds = list(LOG_VAR_BOUNDS)  # box of the log-variances; None: unbounded

    cfg.test = CfgNode()
    cfg.test.batch_size = 128
    cfg.test.dist_metric = 'euclidean'
    # L2-normalise the concatenation (TransReID's FEAT_NORM 'yes'); changes no ranking, the model's eval output is
    # already normalised (model.retrieval_norm)
    cfg.test.normalize_feature = True
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
        'pretrained': uses_hub_weights(cfg),
        'drop_path_rate': cfg.model.drop_path_rate,
        'log_var_bounds': None if bounds is None else tuple(bounds),
        'retrieval_norm': cfg.model.retrieval_norm,
        **{name: cfg.model[name] for name in DCALViT.option_defaults()},
        **dict(cfg.model.timm_kwargs),
    }


def local_weights(cfg: CfgNode) -> Optional[Tuple[str, str]]:
    """``(key, path)`` of the local file that gives the model's weights last: a ``model.resume`` file (not 'auto'),
    else ``model.load_weights``, else ``model.checkpoint``; None without one."""
    for key in ('resume', 'load_weights', 'checkpoint'):  # resume replaces the others, load_weights the checkpoint
        if cfg.model[key] not in ('', AUTO):
            return key, cfg.model[key]
    return None


def uses_hub_weights(cfg: CfgNode) -> bool:
    """``model.pretrained``, unless a local file gives the weights (:func:`local_weights`)."""
    return bool(cfg.model.pretrained) and local_weights(cfg) is None


def imagedata_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of ``torchreid.data.ImageDataManager``; 'transreid' is left out of ``data.transforms`` (see runner)."""
    if TRANSREID in cfg.data.transforms and len(cfg.data.transforms) > 1:
        raise ValueError(f"data.transforms: '{TRANSREID}' is TransReID's whole train transform and replaces "
                         f"torchreid's; give it alone, got {cfg.data.transforms}")
    return {
        'root': cfg.data.root,
        'sources': cfg.data.sources,
        'targets': cfg.data.targets,
        'height': cfg.data.height,
        'width': cfg.data.width,
        'transforms': [name for name in cfg.data.transforms if name != TRANSREID],
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
        'bias_lr_factor': cfg.train.bias_lr_factor,
        'weight_decay_bias': cfg.train.weight_decay_bias,
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
        'seed': cfg.train.seed,
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
