"""Checkpoint files in the formats users have, and the clear errors for ones that do not fit."""
import pytest
import safetensors.torch
import timm
import torch

from dcal_plugin.core import DCALViT, checkpoint_filter

TINY_ARGS = dict(img_size=64, depth=3, num_classes=5)


class TrainerState:
    """An arbitrary Python object, as some training scripts pickle beside the weights."""


def build(path, **overrides):
    return DCALViT.from_timm('deit_tiny_patch16_224', checkpoint_path=str(path), **dict(TINY_ARGS, **overrides)).eval()


@pytest.mark.parametrize('wrap', ['plain', 'model', 'state_dict', 'safetensors'])
def test_checkpoint_formats_load_the_same_weights(tiny_checkpoint, tmp_path, wrap):
    timm_model, plain = tiny_checkpoint
    state = timm_model.state_dict()
    if wrap == 'safetensors':
        path = tmp_path / 'weights.safetensors'
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / 'weights.pth'
        torch.save(state if wrap == 'plain' else {wrap: state, 'epoch': 3}, path)
    model = build(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).sa_logits, timm_model(x), rtol=1e-5, atol=1e-5)
    # GLCA starts as a copy of the loaded weights, not of the random initialisation
    torch.testing.assert_close(model.glca_block.attn.qkv.weight, timm_model.blocks[-1].attn.qkv.weight)
    torch.testing.assert_close(model.glca_head.weight, timm_model.head.weight)


def test_a_state_dict_goes_through_the_files_resizing_and_checks(tiny_checkpoint):
    timm_model, path = tiny_checkpoint
    from_file = build(path, img_size=96)
    from_state = DCALViT.from_timm('deit_tiny_patch16_224', **dict(TINY_ARGS, img_size=96))
    from_state.load_timm_state_dict(timm_model.state_dict(), source='the tiny model')
    for name, value in from_file.state_dict().items():
        assert torch.equal(from_state.state_dict()[name], value), name  # pos_embed resized to 6×6, GLCA copied
    assert from_state.vit.pos_embed.shape == (1, 37, 192)
    shallow = {key: value for key, value in timm_model.state_dict().items() if not key.startswith('blocks.2.')}
    with pytest.raises(ValueError, match=r'checkpoint the tiny model does not match .*missing \[12\]: blocks\.2\.'):
        from_state.load_timm_state_dict(shallow, source='the tiny model')


def test_classifier_of_another_size_is_dropped(tiny_checkpoint):
    timm_model, path = tiny_checkpoint
    model = build(path, num_classes=7)
    assert model.vit.head.weight.shape == (7, 192)
    torch.testing.assert_close(model.vit.blocks[0].attn.qkv.weight, timm_model.blocks[0].attn.qkv.weight)
    assert build(path, num_classes=0).vit.num_classes == 0


def test_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / 'deit_small.pth'
    torch.save(timm.create_model('deit_small_patch16_224', img_size=64, depth=3).state_dict(), path)
    with pytest.raises(ValueError, match=r'does not match deit_tiny_patch16_224.*shape mismatch \[\d+\]: '
                                         r'cls_token: checkpoint \(1, 1, 384\) vs model \(1, 1, 192\)'):
        build(path)


def test_checkpoint_of_another_depth_or_family_names_missing_and_unexpected_keys(tmp_path):
    deeper = tmp_path / 'deeper.pth'
    torch.save(timm.create_model('deit_tiny_patch16_224', img_size=64, depth=4).state_dict(), deeper)
    with pytest.raises(ValueError, match=r'unexpected \[\d+\]: blocks\.3\.'):
        build(deeper)
    resnet = tmp_path / 'resnet.pth'
    torch.save(timm.create_model('resnet18').state_dict(), resnet)
    with pytest.raises(ValueError, match=r'missing \[\d+\]: cls_token.*unexpected \[\d+\]: conv1.weight'):
        build(resnet)


def test_long_key_lists_show_the_first_five_and_count_the_rest(tmp_path):
    import re
    resnet = timm.create_model('resnet18').state_dict()
    torch.save(resnet, tmp_path / 'resnet.pth')
    vit = DCALViT.from_timm('deit_tiny_patch16_224', **TINY_ARGS).vit.state_dict()
    with pytest.raises(ValueError) as error:
        build(tmp_path / 'resnet.pth')
    listed = dict((title, (count, shown, more)) for title, count, shown, more in re.findall(
        r'(missing|unexpected) \[(\d+)\]: ([^;]*?) \(and (\d+) more\)', str(error.value)))
    for title, keys in (('missing', list(vit)), ('unexpected', list(resnet))):
        count, shown, more = listed[title]
        assert shown.split(', ') == keys[:5] and int(more) == int(count) - 5, title


def test_checkpoint_is_read_with_weights_only(tiny_checkpoint, tmp_path):
    timm_model, _ = tiny_checkpoint
    path = tmp_path / 'with_args.pth'
    torch.save({'model': timm_model.state_dict(), 'trainer': TrainerState()}, path)
    with pytest.raises(ValueError, match='weights_only=True'):
        build(path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        build(tmp_path / 'nowhere.pth')


def test_unknown_and_unsupported_model_names():
    with pytest.raises(ValueError, match=r"unknown timm model 'deit_tinny_patch16_224'.*deit_tiny_patch16_224"):
        DCALViT.from_timm('deit_tinny_patch16_224')
    with pytest.raises(ValueError, match='needs a timm VisionTransformer.*ResNet'):
        DCALViT.from_timm('resnet18')
    with pytest.raises(ValueError, match='needs a class token and token pooling'):
        DCALViT.from_timm('vit_small_patch16_224', img_size=64, depth=1, class_token=False, global_pool='avg')


@pytest.mark.parametrize('name,module', [('deit_small_patch16_224', 'timm.models.vision_transformer'),
                                         ('vit_base_r50_s16_384', 'timm.models.vision_transformer_hybrid')])
def test_checkpoint_filter_is_timms_own(name, module):
    assert checkpoint_filter(name).func.__module__ == module
    assert checkpoint_filter('deit_base_patch16_224').keywords == {'adapt_layer_scale': True}


@pytest.mark.parametrize('num_classes', [5, 7, 0])
def test_a_dcal_state_dict_keeps_glcas_classifier_only_for_the_same_label_set(num_classes):
    """Another label set (or none) drops GLCA's classifier as SA's; GLCA's then starts as a copy of SA's."""
    torch.manual_seed(0)
    trained = DCALViT.from_timm('deit_tiny_patch16_224', img_size=32, patch_size=8, depth=2, num_classes=5)
    with torch.no_grad():
        trained.glca_head.weight.add_(1.0)  # GLCA's classifier no longer a copy of SA's
        trained.glca_block.mlp.fc1.bias.add_(1.0)
    torch.manual_seed(1)
    model = DCALViT.from_timm('deit_tiny_patch16_224', img_size=32, patch_size=8, depth=2, num_classes=num_classes)
    model.load_dcal_state_dict(trained.state_dict())
    torch.testing.assert_close(model.glca_block.mlp.fc1.bias, trained.glca_block.mlp.fc1.bias)
    torch.testing.assert_close(model.vit.blocks[1].attn.qkv.weight, trained.vit.blocks[1].attn.qkv.weight)
    if num_classes == 5:
        torch.testing.assert_close(model.glca_head.weight, trained.glca_head.weight)
    elif num_classes == 7:
        torch.testing.assert_close(model.glca_head.weight, model.vit.head.weight)
        assert not torch.equal(model.vit.head.weight[:5], trained.vit.head.weight)  # dropped, not loaded
