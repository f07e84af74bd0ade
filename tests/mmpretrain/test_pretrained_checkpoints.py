"""``init_cfg=dict(type='Pretrained', ...)`` loads mmpretrain model-zoo ViT/DeiT, timm and DCAL weights, or stops."""
import pytest
import timm
import torch
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmpretrain.registry import MODELS
from timm.layers import resample_abs_pos_embed

import dcal_plugin.mmpretrain  # noqa: F401

from .conftest import small_config

# mmpretrain VisionTransformer (in an ImageClassifier, as the model zoo saves it) and the timm model it fits;
# patch 8 on 32×32 images: a 4×4 grid
ZOO = {
    'vit': (dict(arch=dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128)),
            dict(model_name='vit_base_patch16_224', embed_dim=64, depth=2, num_heads=2, mlp_ratio=2)),
    'deit': (dict(arch=dict(embed_dims=192, num_layers=2, num_heads=3, feedforward_channels=768)),
             dict(model_name='deit_tiny_patch16_224', depth=2)),
    'vit_pre_norm_layer_scale': (
        dict(arch=dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128), pre_norm=True,
             layer_scale_init_value=0.1),
        dict(model_name='vit_base_patch16_224', embed_dim=64, depth=2, num_heads=2, mlp_ratio=2, pre_norm=True,
             init_values=0.1)),
}
# timm's name <- mmpretrain's, written out here independently of the adapter's conversion ({i}: block)
TIMM_FROM_MMPRETRAIN = {
    'cls_token': 'cls_token', 'pos_embed': 'pos_embed', 'patch_embed.proj.weight': 'patch_embed.projection.weight',
    'patch_embed.proj.bias': 'patch_embed.projection.bias', 'norm.weight': 'ln1.weight', 'norm.bias': 'ln1.bias',
    'blocks.{i}.norm1.weight': 'layers.{i}.ln1.weight', 'blocks.{i}.norm1.bias': 'layers.{i}.ln1.bias',
    'blocks.{i}.attn.qkv.weight': 'layers.{i}.attn.qkv.weight', 'blocks.{i}.attn.qkv.bias': 'layers.{i}.attn.qkv.bias',
    'blocks.{i}.attn.proj.weight': 'layers.{i}.attn.proj.weight',
    'blocks.{i}.attn.proj.bias': 'layers.{i}.attn.proj.bias', 'blocks.{i}.norm2.weight': 'layers.{i}.ln2.weight',
    'blocks.{i}.norm2.bias': 'layers.{i}.ln2.bias', 'blocks.{i}.mlp.fc1.weight': 'layers.{i}.ffn.layers.0.0.weight',
    'blocks.{i}.mlp.fc1.bias': 'layers.{i}.ffn.layers.0.0.bias',
    'blocks.{i}.mlp.fc2.weight': 'layers.{i}.ffn.layers.1.weight',
    'blocks.{i}.mlp.fc2.bias': 'layers.{i}.ffn.layers.1.bias',
}


def mmpretrain_classifier(style: str, img_size: int = 32, **backbone):
    """mmpretrain's own ImageClassifier with its VisionTransformer and VisionTransformerClsHead, random weights."""
    options, _ = ZOO[style]
    width = options['arch']['embed_dims']
    model = MODELS.build(dict(
        type='ImageClassifier', head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=width),
        backbone=dict(type='VisionTransformer', img_size=img_size, patch_size=8, **options, **backbone)))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model.eval()


def save_as_model_zoo(model, path):
    """The model zoo's file: ``state_dict`` with ``backbone.``/``head.`` keys, and ``meta``."""
    torch.save({'state_dict': model.state_dict(), 'meta': dict(mmpretrain_version='1.2.0', epoch=300)}, path)
    return str(path)


def dcal_classifier(style: str, width: int):
    """A DCAL ImageClassifier of ``style``'s sizes (what a DCAL run saves), built with mmengine's initial weights."""
    return MODELS.build(dict(type='ImageClassifier', head=dict(type='DCALClsHead', num_classes=10, in_channels=width),
                             backbone=dict(type='DCALVisionTransformer', img_size=32, patch_size=8, **ZOO[style][1])))


def dcal_backbone(style: str, checkpoint: str, img_size: int = 32, prefix='backbone.', **options):
    """The DCAL backbone of ``style``'s sizes, its weights loaded by init_weights from a Pretrained init_cfg."""
    init_cfg = dict(type='Pretrained', checkpoint=checkpoint, **({'prefix': prefix} if prefix else {}))
    backbone = MODELS.build(dict(type='DCALVisionTransformer', img_size=img_size, patch_size=8, init_cfg=init_cfg,
                                 **ZOO[style][1], **options))
    backbone.init_weights()
    return backbone.eval()


@pytest.mark.parametrize('style', list(ZOO))
def test_a_model_zoo_checkpoint_gives_mmpretrains_features(style, tmp_path):
    reference = mmpretrain_classifier(style)
    backbone = dcal_backbone(style, save_as_model_zoo(reference, tmp_path / 'zoo.pth'))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, = reference.extract_feat(images, stage='backbone')
        features = backbone(images)
    assert expected.abs().mean() > 0.05  # a feature that weights change
    torch.testing.assert_close(features.sa, expected, rtol=1e-5, atol=1e-5)
    last = reference.backbone.layers[-1]
    torch.testing.assert_close(backbone.dcal.glca_block.mlp.fc1.weight, last.ffn.layers[0][0].weight)  # GLCA's copy
    torch.testing.assert_close(backbone.dcal.glca_norm.weight, reference.backbone.ln1.weight)


@pytest.mark.parametrize('style', ['vit', 'deit'])
def test_a_model_zoo_checkpoint_is_resized_by_timms_filter(style, tmp_path):
    """At 48×48 (6×6 patches from 4×4) the position embeddings are timm's resampling; all else mmpretrain's forward.

    timm resamples with antialiased bicubic (PIL's kernel), mmpretrain's ``resize_pos_embed`` with
    plain bicubic: the two differ by a few percent, so the reference at 48×48 is mmpretrain's
    VisionTransformer given the zoo weights with DCAL's resized position embeddings.
    """
    zoo = mmpretrain_classifier(style)
    backbone = dcal_backbone(style, save_as_model_zoo(zoo, tmp_path / 'zoo.pth'), img_size=48)
    resized = resample_abs_pos_embed(zoo.backbone.pos_embed.detach(), new_size=(6, 6), num_prefix_tokens=1)
    torch.testing.assert_close(backbone.dcal.vit.pos_embed.detach(), resized)
    reference = mmpretrain_classifier(style, img_size=48)
    reference.load_state_dict(dict(zoo.state_dict(), **{'backbone.pos_embed': resized}))
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected, = reference.extract_feat(images, stage='backbone')
        torch.testing.assert_close(backbone(images).sa, expected, rtol=1e-5, atol=1e-5)


def test_a_model_zoo_checkpoint_with_prefix_loads_through_the_runner(digits_roots, tmp_path):
    """The small config (DeiT-Tiny width, 2 blocks, 32×32) from a DeiT-style zoo file: each weight compared by name."""
    zoo = mmpretrain_classifier('deit')
    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=save_as_model_zoo(zoo, tmp_path / 'zoo.pth'),
                                       prefix='backbone.')
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook['type'] != 'AttentionRolloutHook']
    initial = {}

    class RecordInitialWeights(Hook):
        def before_train(self, runner):
            initial.update({name: value.clone() for name, value in runner.model.backbone.state_dict().items()})

    runner = RUNNERS.build(cfg)
    runner.register_hook(RecordInitialWeights())
    runner.train()
    source = zoo.backbone.state_dict()
    for timm_name, zoo_name in TIMM_FROM_MMPRETRAIN.items():
        for block in range(2) if '{i}' in timm_name else [None]:
            name = timm_name.format(i=block)
            assert torch.equal(initial[f'dcal.vit.{name}'], source[zoo_name.format(i=block)]), name
    assert torch.equal(initial['dcal.glca_block.attn.qkv.weight'], source['layers.1.attn.qkv.weight'])
    assert runner.iter == len(runner.train_dataloader)  # and it trained from there


@pytest.mark.parametrize('prefix', [None, 'backbone.'])
def test_a_timm_file_loads_with_or_without_prefix(prefix, tmp_path):
    vit = timm.create_model('deit_tiny_patch16_224', img_size=32, patch_size=8, depth=2, num_classes=0).eval()
    torch.save(vit.state_dict(), tmp_path / 'timm.pth')
    backbone = dcal_backbone('deit', str(tmp_path / 'timm.pth'), prefix=prefix)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images).sa, vit.forward_features(images)[:, 0], rtol=1e-5, atol=1e-5)


def test_a_url_goes_through_mmengines_loader(tmp_path, monkeypatch):
    """mmengine's ``https://`` loader, its download (``mmengine.runner.checkpoint.load_url``) mocked by a file read."""
    path = save_as_model_zoo(mmpretrain_classifier('vit'), tmp_path / 'zoo.pth')
    url = 'https://download.openmmlab.com/mmclassification/v0/vit/vit-tiny-test.pth'
    downloads = []

    def download(address, map_location=None, **kwargs):
        downloads.append(address)
        return torch.load(path, map_location=map_location, weights_only=True)

    monkeypatch.setattr('mmengine.runner.checkpoint.load_url', download)
    from_url, from_file = dcal_backbone('vit', url), dcal_backbone('vit', path)
    assert downloads == [url]
    for name, value in from_file.state_dict().items():
        assert torch.equal(from_url.state_dict()[name], value), name


@pytest.mark.parametrize('img_size', [32, 48])
def test_a_dcal_checkpoint_loads_with_glca(img_size, tmp_path):
    """A DCAL classifier's own checkpoint (GLCA's weights unlike SA's last block): the backbone, GLCA included."""
    classifier = dcal_classifier('deit', width=192)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in classifier.parameters():
            parameter.normal_(0.0, 0.2)
    backbone = dcal_backbone('deit', save_as_model_zoo(classifier, tmp_path / 'dcal.pth'), img_size=img_size)
    source = classifier.backbone.state_dict()
    assert not torch.equal(source['dcal.glca_block.attn.qkv.weight'], source['dcal.vit.blocks.1.attn.qkv.weight'])
    for name, value in backbone.state_dict().items():
        expected = source[name]
        if name == 'dcal.vit.pos_embed' and img_size != 32:
            expected = resample_abs_pos_embed(expected, new_size=(6, 6), num_prefix_tokens=1)
        assert torch.equal(value, expected), name


# what a checkpoint that does not fit the 'vit' backbone holds -> (the error, the backbone's options)
UNFIT = {
    'a layer missing': (r'missing \[12\]: blocks\.1\.norm1\.weight', {}),
    'avg_featmap': (r'unexpected \[2\]: ln2\.weight', {}),
    'prefix in no key': (r"no key starts with 'backbone\.': read whole.*missing \[\d+\]: cls_token", {}),
    'GLCA into a model without': (r'does not match the GLCA branch: unexpected \[\d+\]: glca_block\.norm1\.weight',
                                  dict(use_glca=False)),
}


def unfit_state_dict(case: str) -> dict:
    """The state_dict of ``UNFIT``'s ``case``."""
    if case == 'avg_featmap':  # mmpretrain's mean-pooled ViT, with a norm DCAL does not have
        return mmpretrain_classifier('vit', out_type='avg_featmap').state_dict()
    if case == 'GLCA into a model without':
        return dcal_classifier('vit', width=64).state_dict()
    state = mmpretrain_classifier('vit').state_dict()
    if case == 'a layer missing':
        return {key: value for key, value in state.items() if not key.startswith('backbone.layers.1.')}
    return {f'model.{key}': value for key, value in state.items()}


@pytest.mark.parametrize('case', list(UNFIT))
def test_a_checkpoint_that_does_not_fit_stops_with_the_keys(case, tmp_path):
    message, options = UNFIT[case]
    torch.save({'state_dict': unfit_state_dict(case)}, tmp_path / 'unfit.pth')
    with pytest.raises(ValueError, match=message):
        dcal_backbone('vit', str(tmp_path / 'unfit.pth'), **options)


def test_a_pretrained_init_cfg_in_a_list_is_refused(tmp_path):
    backbone = MODELS.build(dict(type='DCALVisionTransformer', img_size=32, patch_size=8, **ZOO['vit'][1],
                                 init_cfg=[dict(type='Pretrained', checkpoint='zoo.pth', prefix='backbone.')]))
    with pytest.raises(ValueError, match='Pretrained init_cfg of DCALVisionTransformer alone'):
        backbone.init_weights()
