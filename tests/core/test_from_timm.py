"""DCALViT.from_timm on checkpoints that timm itself writes: the SA branch equals timm, at the original and resized
inputs."""
import pytest
import timm
import torch

from dcal_plugin.core import SUPPORTED_MODELS, DCALViT, dcal_family, dcal_from_timm


FULL_MODELS = ['deit_tiny_patch16_224', 'vit_base_r50_s16_224']


@pytest.fixture(scope='module', params=FULL_MODELS)
def full_checkpoint(request, tmp_path_factory):
    """A full-size randomly initialised timm model with 1000 classes, and checkpoints it wrote.

    ``path``: ``torch.save(model.state_dict())``. ``pretrained_path``: what timm's own pretrained
    path loads for this name (its cfg's classifier: the hybrid's cfg has none, so no ``head.*``).
    """
    name = request.param
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    folder = tmp_path_factory.mktemp('ckpt')
    path, pretrained_path = folder / f'{name}.pth', folder / f'{name}_pretrained.pth'
    torch.save(model.state_dict(), path)
    cfg_classes = model.pretrained_cfg['num_classes']
    torch.save({k: v for k, v in model.state_dict().items() if cfg_classes or not k.startswith('head.')},
               pretrained_path)
    return dict(name=name, model=model, path=str(path), pretrained_path=str(pretrained_path), cfg_classes=cfg_classes)


def max_diff(a, b):
    return (a - b).abs().max().item()


def test_sa_logits_equal_timm_at_the_checkpoint_size(full_checkpoint):
    name = full_checkpoint['name']
    model = DCALViT.from_timm(name, checkpoint_path=full_checkpoint['path'], num_classes=1000).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, out = full_checkpoint['model'](x), model(x)
    print(f'{name} @224: max |sa_logits - timm| = {max_diff(out.sa_logits, want):.2e}')
    assert max_diff(out.sa_logits, want) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize('img_size', [448, (256, 128)])
def test_sa_equals_timm_pretrained_path_after_resizing(full_checkpoint, img_size):
    name, num_classes, path = (full_checkpoint['name'], full_checkpoint['cfg_classes'],
                               full_checkpoint['pretrained_path'])
    reference = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=path), img_size=img_size,
        num_classes=num_classes).eval()
    model = DCALViT.from_timm(name, checkpoint_path=path, img_size=img_size, num_classes=num_classes).eval()
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, out = reference(x), model(x)
    got = out.sa_logits if num_classes else out.sa_feature
    print(f'{name} @{img_size}: max |sa_{"logits" if num_classes else "feature"} - timm| = {max_diff(got, want):.2e}')
    assert max_diff(got, want) < 1e-4
    assert model.grid_size == (height // 16, width // 16)
    assert out.glca_feature.shape == out.sa_feature.shape


@pytest.mark.parametrize('name', SUPPORTED_MODELS)
def test_every_supported_model_builds_and_runs_all_its_branches(name):
    stride = 32 if name.startswith('swin') else 14 if 'patch14' in name else 16  # Swin: its last stage's tokens
    family = dcal_family(name)
    options = {} if 'use_glca' in family.option_defaults() else dict(use_glca=False)  # Swin: PWCA only
    model = dcal_from_timm(name, img_size=(4 * stride, 2 * stride), num_classes=3, drop_path_rate=0.1, **options)
    assert type(model) is family
    out = model(torch.randn(2, 3, 4 * stride, 2 * stride))
    width = model.vit.num_features
    assert out.sa_logits.shape == out.pwca_logits.shape == (2, 3)
    if not model.use_glca:
        assert out.glca_logits is None and out.reid_feature.shape == (2, width)
        return
    assert out.glca_logits.shape == (2, 3)
    assert out.reid_feature.shape == (2, 2 * width) and out.local_query_index.shape == (2, 1)
    if family is DCALViT:
        assert model.glca_block.drop_path1.drop_prob > 0  # the copy keeps the block's stochastic depth
