"""Every configs/reid/*.yaml loads over the defaults and builds its model (full size: built, never trained)."""
from pathlib import Path

import pytest
import timm
import torch

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import MODEL_NAMES, build_dcal_reid, get_default_config  # noqa: E402
from dcal_plugin.torchreid.config import model_kwargs  # noqa: E402

from ..vit_npz import save_vit_npz  # noqa: E402
from .helpers import TINY_MODEL, tiny_config  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'reid'
CONFIGS = sorted(CONFIG_DIR.glob('*.yaml'))
PAPER = {'deit-tiny': 'dcal_deit_tiny', 'deit-small': 'dcal_deit_small', 'deit-base': 'dcal_deit_base',
         'vit': 'dcal_vit_base', 'r50-vit': 'dcal_r50_vit_base'}
SIZES = {'veri776': (256, 256), 'msmt17': (256, 128), 'market1501': (256, 128), 'dukemtmcreid': (256, 128)}
# the paper's rows: each backbone on each data set, and the supplementary's Swin-T (PWCA only) on MSMT17
PAPER_ROWS = [(backbone, dataset) for backbone in sorted(PAPER) for dataset in sorted(SIZES)]
PAPER_ROWS.append(('swin-tiny', 'msmt17'))


def load(path):
    """The config of ``path`` without timm's hub weights (no network here; see tests/test_pretrained_weights.py)."""
    cfg = get_default_config()
    cfg.merge_from_file(str(path))
    cfg.model.pretrained = False
    return cfg


@pytest.mark.parametrize('path', CONFIGS, ids=lambda path: path.stem)
def test_config_builds_its_model(path):
    cfg = load(path)
    model = build_dcal_reid(num_classes=11, **model_kwargs(cfg))
    assert model.dcal.vit.pretrained_cfg['architecture'] == MODEL_NAMES[cfg.model.name]
    assert tuple(model.dcal.vit.patch_embed.img_size) == (cfg.data.height, cfg.data.width)
    if 'swin' in cfg.model.name:  # PWCA only; its last stage's tokens are 32 pixels
        assert not model.dcal.use_glca and model.dcal.patch_stride == (32, 32)
        return
    patch = cfg.model.timm_kwargs.get('patch_size', 14 if 'dinov2' in cfg.model.name else 16)
    assert model.dcal.grid_size == (cfg.data.height // patch, cfg.data.width // patch)
    assert model.num_classes == 11
    assert cfg.data.sources == [{'msmt17': 'msmt17_trainval'}.get(cfg.data.targets[0], cfg.data.targets[0])]


@pytest.mark.parametrize('backbone, dataset', PAPER_ROWS)
def test_paper_configs_keep_the_paper_recipe(backbone, dataset):
    cfg = load(CONFIG_DIR / f'dcal_{backbone}_{dataset}.yaml')
    source = 'msmt17_trainval' if dataset == 'msmt17' else dataset  # MSMT17: train + val lists, as TransReID
    assert cfg.model.use_glca == (backbone != 'swin-tiny')  # Swin-T: PWCA only, as the paper
    assert cfg.model.name == dict(PAPER, **{'swin-tiny': 'dcal_swin_tiny'})[backbone]
    assert cfg.data.sources == [source] and cfg.data.targets == [dataset]
    assert (cfg.data.height, cfg.data.width) == SIZES[dataset]
    assert (cfg.train.optim, cfg.train.lr, cfg.train.weight_decay, cfg.sgd.momentum) == ('sgd', 0.008, 1e-4, 0.9)
    assert (cfg.train.lr_scheduler, cfg.train.max_epoch, cfg.train.warmup_epochs) == ('cosine', 120, 5)
    assert (cfg.train.batch_size, cfg.sampler.num_instances,
            cfg.sampler.train_sampler) == (64, 4, 'RandomIdentitySampler')
    assert cfg.model.local_query_ratio == 0.3
    assert cfg.data.transforms == ['transreid']
    assert (cfg.loss.triplet.weight_t, cfg.loss.triplet.weight_x) == (1.0, 1.0)
    # TransReID's ViT baseline where the paper is silent
    assert (cfg.loss.softmax.label_smooth, cfg.loss.triplet.margin) == (False, None)
    assert (cfg.train.bias_lr_factor, cfg.train.weight_decay_bias) == (2.0, 1e-4)
    assert (cfg.model.retrieval_norm, cfg.test.normalize_feature) == ('each', True)
    assert (cfg.train.warmup_factor, cfg.model.drop_path_rate) == (0.01, 0.1)
    mean = [0.5] * 3 if backbone in ('vit', 'r50-vit') else [0.485, 0.456, 0.406]
    assert cfg.data.norm_mean == mean


BEYOND_PAPER = {'dinov2-small-reg4': ('dcal_dinov2_small_reg4', 224),
                'dinov2-base-reg4': ('dcal_dinov2_base_reg4', 224),
                'clip-base': ('dcal_clip_base', 256)}


@pytest.mark.parametrize('backbone', sorted(BEYOND_PAPER))
def test_configs_beyond_the_paper_keep_its_recipe_and_its_token_grid(backbone):
    cfg, paper = load(CONFIG_DIR / f'dcal_{backbone}_veri776.yaml'), load(CONFIG_DIR / 'dcal_deit-small_veri776.yaml')
    name, size = BEYOND_PAPER[backbone]
    assert cfg.model.name == name and (cfg.data.height, cfg.data.width) == (size, size)  # 16 x 16 patches, the paper's
    for key in ('train', 'sampler', 'loss', 'sgd'):
        assert cfg[key] == paper[key], key
    assert cfg.model.local_query_ratio == 0.3 and cfg.data.transforms == ['transreid']
    clip = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # DINOv2 was trained with ImageNet's statistics
    assert (cfg.data.norm_mean, cfg.data.norm_std) == (clip if backbone == 'clip-base' else imagenet)


def test_model_checkpoint_reads_an_original_vit_npz(tmp_path):
    cfg = tiny_config(tmp_path, 'veri776', tmp_path)
    torch.manual_seed(0)
    vit = timm.create_model(MODEL_NAMES[cfg.model.name], img_size=32, num_classes=0, **TINY_MODEL).eval()
    cfg.model.checkpoint = str(tmp_path / 'vit.npz')
    save_vit_npz(vit, cfg.model.checkpoint)
    model = build_dcal_reid(num_classes=3, **model_kwargs(cfg))
    state = model.dcal.vit.state_dict()
    assert all(torch.equal(state[key], value) for key, value in vit.state_dict().items())


def test_the_run_says_where_the_weights_come_from():
    from dcal_plugin.torchreid.runner import weights_source
    cfg = get_default_config()
    assert weights_source(cfg).startswith("timm's pretrained deit_tiny_patch16_224 through timm's hub")
    cfg.model.checkpoint = 'deit.pth'
    assert weights_source(cfg) == 'model.checkpoint deit.pth'
    cfg.model.load_weights = 'log/model/model.pth.tar-60'  # loaded after the checkpoint: it wins
    assert weights_source(cfg) == 'model.load_weights log/model/model.pth.tar-60'
    cfg.model.resume = 'log/model/model.pth.tar-30'  # resumed after both: it wins
    assert weights_source(cfg) == 'model.resume log/model/model.pth.tar-30'
    cfg.model.checkpoint = cfg.model.load_weights = ''
    cfg.model.pretrained = False
    cfg.model.resume = 'auto'  # no file yet: run() resolves it before the model is built
    assert weights_source(cfg).startswith('random initialisation')
