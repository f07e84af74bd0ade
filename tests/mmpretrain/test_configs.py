"""Every config in configs/ builds with Config.fromfile + MODELS.build and runs a forward at a reduced size."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS, init_default_scope
from mmpretrain.registry import MODELS

from dcal_plugin.core import BEYOND_PAPER_TAGS, PAPER_PRETRAINED_TAGS, paper_pretrained_tag

from .conftest import REPO, small_config

CONFIGS = sorted(p.name for p in (REPO / 'configs').glob('*.py'))
PAPER = {'deit-tiny': ('deit_tiny_patch16_224', 192), 'deit-small': ('deit_small_patch16_224', 384),
         'deit-base': ('deit_base_patch16_224', 768), 'vit': ('vit_base_patch16_224', 768),
         'r50-vit': ('vit_base_r50_s16_224', 768)}
CLASSES = {'cub': ('CUB', 200), 'cars': ('StanfordCars', 196), 'aircraft': ('FGVCAircraft', 100)}
# beyond the paper: (timm model, width, image size: the paper's 28 x 28 patch grid)
# the paper's supplementary backbones (METHOD §9): (timm model, width); Swin-T with PWCA only
SUPPLEMENTARY = {'swin-tiny': ('swin_tiny_patch4_window7_224', 768), 'cait-xs24': ('cait_xs24_384', 288)}
BEYOND_PAPER = {'dinov2-small-reg4': ('vit_small_patch14_reg4_dinov2', 384, 392),
                'dinov2-base-reg4': ('vit_base_patch14_reg4_dinov2', 768, 392),
                'clip-base': ('vit_base_patch16_clip_224', 768, 448)}


def test_the_family_is_complete():
    assert len(CONFIGS) == 16 + len(SUPPLEMENTARY) + len(BEYOND_PAPER)
    for arch in (*SUPPLEMENTARY, *BEYOND_PAPER):
        assert f'dcal_{arch}_cub.py' in CONFIGS
    for arch in PAPER:
        for dataset in CLASSES:
            assert f'dcal_{arch}_{dataset}.py' in CONFIGS


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_and_runs_one_forward(name):
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    init_default_scope('mmpretrain')
    stride = 14 if 'dinov2' in cfg.model.backbone.model_name else 16
    cfg.model.backbone.update(img_size=4 * stride, checkpoint_path=None)
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        [prediction] = model.test_step({'inputs': [torch.randint(0, 256, (3, 4 * stride, 4 * stride),
                                                                 dtype=torch.uint8)],
                                        'data_samples': None})
    assert prediction.pred_score.shape == (cfg.model.head.num_classes,)
    if name.startswith('dcal_deit-tiny_digits'):
        return
    arch, dataset = Path(name).stem[len('dcal_'):].rsplit('_', 1)
    if arch in BEYOND_PAPER:
        model_name, width, size = BEYOND_PAPER[arch]
        assert cfg.model.backbone.model_name == model_name and cfg.model.head.in_channels == width
        assert cfg.train_dataloader.dataset.pipeline[2].crop_size == size == 28 * stride  # the paper's grid
        assert cfg.model.backbone.checkpoint_path is None
        return
    model_name, width = {**PAPER, **SUPPLEMENTARY}[arch]
    assert cfg.model.backbone.model_name == model_name and cfg.model.head.in_channels == width
    assert (type(model.backbone.dcal).__name__ == 'DCALSwin') == (arch == 'swin-tiny') and (
        model.head.glca_fc is None) == (arch == 'swin-tiny')  # Swin-T: PWCA only, as the paper
    assert cfg.model.head.num_classes == CLASSES[dataset][1]
    assert cfg.train_dataloader.dataset.type == CLASSES[dataset][0]
    # the paper's recipe (METHOD §7)
    assert cfg.model.backbone.local_query_ratio == 0.1 and cfg.train_dataloader.batch_size == 16
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_cfg.max_epochs == 100 and cfg.param_scheduler[-1].type == 'CosineAnnealingLR'
    assert [t['type'] for t in cfg.train_dataloader.dataset.pipeline][1:3] == ['Resize', 'RandomCrop']
    assert cfg.train_dataloader.dataset.pipeline[1].scale == (550, 550)
    assert cfg.train_dataloader.dataset.pipeline[2].crop_size == 448
    assert cfg.model.backbone.checkpoint_path is None  # reset above; the file itself sets a timm checkpoint


@pytest.mark.slow
def test_paper_configs_name_a_timm_checkpoint_of_the_papers_fgvc_tag():
    for name in CONFIGS:
        if 'digits' not in name and Path(name).stem[len('dcal_'):].rsplit('_', 1)[0] in PAPER:
            cfg = Config.fromfile(str(REPO / 'configs' / name))
            model_name = cfg.model.backbone.model_name
            # METHOD §7: DeiT on ImageNet-1k; ViT-B and R50-ViT-B on Google's original ImageNet-21k (TransFG's files)
            tag = 'fb_in1k' if model_name.startswith('deit') else 'orig_in21k'
            assert cfg.model.backbone.checkpoint_path == f'checkpoints/{model_name}.{tag}.pth'
            assert PAPER_PRETRAINED_TAGS[model_name] == tag  # what pretrained=True downloads
        if Path(name).stem[len('dcal_'):].rsplit('_', 1)[0] in SUPPLEMENTARY:  # the paper names no weights: ours
            cfg = Config.fromfile(str(REPO / 'configs' / name))
            model_name = cfg.model.backbone.model_name
            tag = PAPER_PRETRAINED_TAGS[model_name]
            assert cfg.model.backbone.checkpoint_path == f'checkpoints/{model_name}.{tag}.pth'


@pytest.mark.parametrize('arch', sorted(BEYOND_PAPER))
def test_configs_beyond_the_paper_keep_its_recipe_and_name_timms_weights(arch):
    cfg, paper = (Config.fromfile(str(REPO / 'configs' / f'dcal_{name}_cub.py')) for name in (arch, 'deit-small'))
    model_name = BEYOND_PAPER[arch][0]
    assert cfg.model.backbone.checkpoint_path == f'checkpoints/{model_name}.{paper_pretrained_tag(model_name)}.pth'
    assert paper_pretrained_tag(model_name) == BEYOND_PAPER_TAGS[model_name]
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr', 'default_hooks', 'custom_hooks'):
        assert cfg[key] == paper[key], key
    assert cfg.model.backbone.local_query_ratio == 0.1 and cfg.train_dataloader.batch_size == 16
    clip_mean = [122.771, 116.746, 104.094]
    assert (cfg.data_preprocessor.mean == clip_mean) == (arch == 'clip-base')


def test_learning_rate_follows_the_papers_batch_rule(digits_roots, tmp_path):
    """lr = 5e-4 / 512 × batch size (METHOD §7, §10): auto_scale_lr is on in the paper configs."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'dcal_vit_cub.py'))
    small = small_config(digits_roots['cub'], tmp_path)
    cfg.model.backbone.update(img_size=32, depth=1, checkpoint_path=None)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset = small[loader].dataset
    cfg.work_dir = str(tmp_path)
    runner = RUNNERS.build(cfg)
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    runner.scale_lr(optim_wrapper, runner.auto_scale_lr)
    assert [group['lr'] for group in optim_wrapper.optimizer.param_groups] == pytest.approx(
        [5e-4 * 16 / 512] * len(optim_wrapper.optimizer.param_groups))
    no_decay = [g for g in optim_wrapper.optimizer.param_groups if any(p is runner.model.head.loss_weighting.log_vars
                                                                       for p in g['params'])]
    assert no_decay[0]['weight_decay'] == 0.0


@pytest.mark.parametrize('height, width', [(64, 64), (200, 300), (48, 48)])
def test_the_demo_config_classifies_an_image_of_any_size(height, width):
    import numpy as np
    from mmpretrain import ImageClassificationInferencer

    cfg = Config.fromfile(str(REPO / 'configs' / 'dcal_deit-tiny_digits-cub.py'))
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    [result] = ImageClassificationInferencer(model=cfg)(image)
    assert 0 <= result['pred_label'] < 10


def test_the_demo_config_fine_tunes_the_built_in_pretrained_vit_from_any_folder(tmp_path, monkeypatch):
    """Its checkpoint_path names the shipped file beside the config, whatever the working folder (a pip user's)."""
    from dcal_plugin.resources import builtin_checkpoint
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(str(REPO / 'configs' / 'dcal_deit-tiny_digits-cub.py'))
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    weights = torch.load(builtin_checkpoint(), weights_only=True)
    vit = model.backbone.dcal.vit
    torch.testing.assert_close(vit.blocks[3].attn.qkv.weight, weights['blocks.3.attn.qkv.weight'])
    assert weights['pos_embed'].shape[1] == 1 + 4 * 4 and vit.pos_embed.shape[1] == 1 + 6 * 6  # resized on load
    # the paper's recipe but for the lr: x 40 keeps its lr summed over the schedule (the config's comment)
    paper = Config.fromfile(str(REPO / 'configs' / 'dcal_deit-tiny_cub.py'))
    assert cfg.optim_wrapper.optimizer.type == paper.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 40 * paper.optim_wrapper.optimizer.lr
    assert cfg.auto_scale_lr == paper.auto_scale_lr and cfg.train_dataloader.batch_size == 16
    assert cfg.train_dataloader.dataset.pipeline[1:4] == [
        dict(type='Resize', scale=(59, 59)), dict(type='RandomCrop', crop_size=48),
        dict(type='RandomFlip', prob=0.5, direction='horizontal')]
