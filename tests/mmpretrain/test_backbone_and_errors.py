"""The backbone's timm checkpoint loading, and one clear error for each kind of bad input, before any work is
written."""
import pytest
import timm
import torch
from mmengine.registry import RUNNERS
from mmpretrain.registry import MODELS

import dcal_plugin.mmpretrain  # noqa: F401
from dcal_plugin.demo_data import make_demo_data

from ..vit_npz import save_vit_npz
from .conftest import small_config

TINY = dict(type='DCALVisionTransformer', model_name='deit_tiny_patch16_224', img_size=32, depth=2)


@pytest.fixture
def timm_file(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model('deit_tiny_patch16_224', img_size=32, depth=2, num_classes=0).eval()
    path = tmp_path / 'deit_tiny.pth'
    torch.save(vit.state_dict(), path)
    return vit, str(path)


@pytest.mark.parametrize('file_format', ['pth', 'npz'])
@pytest.mark.parametrize('how', ['checkpoint_path', 'init_cfg'])
def test_timm_checkpoint_is_loaded_by_init_weights(timm_file, how, file_format):
    vit, path = timm_file
    if file_format == 'npz':  # the original ViT layout, read by timm's own reader through the core
        path = path.replace('.pth', '.npz')
        save_vit_npz(vit, path)
    spec = dict(TINY, checkpoint_path=path) if how == 'checkpoint_path' else dict(
        TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    backbone = MODELS.build(spec)
    x = torch.randn(2, 3, 32, 32)
    backbone.init_weights()
    backbone.eval()
    with torch.no_grad():
        sa, glca, pwca = backbone(x)
        assert pwca is None  # PWCA only trains
        torch.testing.assert_close(sa, vit.forward_features(x)[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backbone.dcal.glca_block.mlp.fc1.weight, vit.blocks[-1].mlp.fc1.weight)
    assert glca.shape == (2, 192)
    backbone.train()
    assert all(feature.shape == (2, 192) for feature in backbone(x))  # SA, GLCA, PWCA


@pytest.mark.parametrize('sources', [dict(init_cfg=dict(type='Pretrained', checkpoint='x')), dict(pretrained=True)])
def test_backbone_rejects_two_checkpoint_sources(timm_file, sources):
    with pytest.raises(ValueError, match='give one of pretrained, checkpoint_path and init_cfg'):
        MODELS.build(dict(TINY, checkpoint_path=timm_file[1], **sources))


@pytest.fixture
def fresh_cub(tmp_path):
    return make_demo_data(tmp_path / 'data', 'cub', seed=1, image_size=32, train_per_class=2, test_per_class=1)


def assert_nothing_written(work_dir):
    assert not list(work_dir.glob('*.pth'))


def test_missing_listed_image_fails_before_training(fresh_cub, tmp_path):
    victim = sorted((fresh_cub / 'images').rglob('*.jpg'))[5]
    victim.unlink()
    runner = RUNNERS.build(small_config(fresh_cub, tmp_path / 'work'))
    with pytest.raises(FileNotFoundError, match=f'1 listed image.*missing.*{victim.name}'):
        runner.train()
    assert_nothing_written(tmp_path / 'work')


def test_missing_list_file_is_named(fresh_cub, tmp_path):
    (fresh_cub / 'train_test_split.txt').unlink()
    with pytest.raises(FileNotFoundError, match='train_test_split.txt'):
        RUNNERS.build(small_config(fresh_cub, tmp_path / 'work')).train()
    assert_nothing_written(tmp_path / 'work')


def test_image_size_off_the_patch_grid(fresh_cub, tmp_path):
    cfg = small_config(fresh_cub, tmp_path / 'work')
    cfg.model.backbone.img_size = 36
    with pytest.raises(ValueError, match=r'img_size \(36, 36\) does not fit the patch grid.*8x8.*\(32, 32\)'):
        RUNNERS.build(cfg)


def test_checkpoint_of_another_architecture(fresh_cub, tmp_path):
    path = tmp_path / 'small.pth'
    torch.save(timm.create_model('deit_small_patch16_224', img_size=32, patch_size=8, depth=2).state_dict(), path)
    cfg = small_config(fresh_cub, tmp_path / 'work')
    cfg.model.backbone.checkpoint_path = str(path)
    with pytest.raises(ValueError, match=r'does not match deit_tiny_patch16_224.*cls_token: checkpoint \(1, 1, 384\)'):
        RUNNERS.build(cfg).train()
    assert_nothing_written(tmp_path / 'work')


def test_unknown_backbone_name(fresh_cub, tmp_path):
    cfg = small_config(fresh_cub, tmp_path / 'work')
    cfg.model.backbone.model_name = 'deit_tiny_patch16'
    with pytest.raises(ValueError, match="unknown timm model 'deit_tiny_patch16'"):
        RUNNERS.build(cfg)


@pytest.mark.parametrize('config', [dict(with_cp=True), dict(grad_checkpointing=True)])
def test_with_cp_switches_on_activation_checkpointing(config):
    backbone = MODELS.build(dict(TINY, **config))
    assert backbone.dcal.grad_checkpointing and backbone.dcal.vit.grad_checkpointing
    assert not MODELS.build(TINY).dcal.grad_checkpointing
