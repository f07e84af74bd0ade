"""Every option of the core ``DCALViT`` and of its loss weighting reaches the model from an MMPretrain config and
from a torchreid yaml config."""
import inspect

import pytest
import torch

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss

# A value other than the default for each option; the keys must be exactly the core's options.
NON_DEFAULT = dict(local_query_ratio=0.5, glca_block_index=0, residual_weight=0.25, sa_only_inference=True,
                   use_glca=False, use_pwca=False, query_selection='random', pwca_partner_gradient=False,
                   grad_checkpointing=True)
LOSS_NON_DEFAULT = dict(log_var_bounds=(-1.0, 0.5))


def loss_option_defaults():
    parameters = inspect.signature(UncertaintyWeightedLoss.__init__).parameters.values()
    return {parameter.name: parameter.default for parameter in parameters
            if parameter.name not in ('self', 'num_tasks')}


@pytest.mark.parametrize('options, defaults', [(NON_DEFAULT, DCALViT.option_defaults()),
                                               (LOSS_NON_DEFAULT, loss_option_defaults())])
def test_the_list_covers_every_core_option_with_a_value_that_is_not_its_default(options, defaults):
    assert set(options) == set(defaults)
    for name, value in options.items():
        assert value != defaults[name], name


def assert_option(dcal, name, value):
    assert getattr(dcal, name) == (value % len(dcal.vit.blocks) if name == 'glca_block_index' else value), name


@pytest.mark.parametrize('name', list(NON_DEFAULT))
def test_option_reaches_the_mmpretrain_backbone(name):
    pytest.importorskip('mmpretrain')
    from mmpretrain.registry import MODELS

    import dcal_plugin.mmpretrain  # noqa: F401
    backbone = MODELS.build(dict(type='DCALVisionTransformer', model_name='deit_tiny_patch16_224', img_size=32,
                                 depth=2, **{name: NON_DEFAULT[name]}))
    assert_option(backbone.dcal, name, NON_DEFAULT[name])


@pytest.mark.parametrize('name', list(LOSS_NON_DEFAULT))
def test_loss_option_reaches_the_mmpretrain_head(name):
    pytest.importorskip('mmpretrain')
    from mmpretrain.registry import MODELS

    import dcal_plugin.mmpretrain  # noqa: F401
    head = MODELS.build(dict(type='DCALClsHead', num_classes=3, in_channels=8, **{name: LOSS_NON_DEFAULT[name]}))
    assert getattr(head.loss_weighting, name) == LOSS_NON_DEFAULT[name]


def reid_model_from_yaml(tmp_path, yaml_text):
    from dcal_plugin.torchreid import build_dcal_reid, get_default_config
    from dcal_plugin.torchreid.config import model_kwargs

    cfg = get_default_config()
    cfg.model.pretrained = False  # a 2-block model: timm's hub weights would not fit
    cfg.model.timm_kwargs.depth = 2
    (tmp_path / 'options.yaml').write_text(yaml_text)
    cfg.merge_from_file(str(tmp_path / 'options.yaml'))
    cfg.merge_from_list(['data.height', 32, 'data.width', 32])
    return build_dcal_reid(num_classes=3, **model_kwargs(cfg))


@pytest.mark.parametrize('name', list(NON_DEFAULT))
def test_option_reaches_the_torchreid_model_from_yaml(name, tmp_path):
    pytest.importorskip('torchreid')
    value = NON_DEFAULT[name]
    model = reid_model_from_yaml(tmp_path, f'model:\n  {name}: {value!r}\n')
    assert_option(model.dcal, name, value)
    if name == 'sa_only_inference':  # the retrieval feature is then SA's alone
        with torch.no_grad():
            assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, model.feature_dim)


@pytest.mark.parametrize('name', list(LOSS_NON_DEFAULT))
def test_loss_option_reaches_the_torchreid_model_from_yaml(name, tmp_path):
    pytest.importorskip('torchreid')
    value = LOSS_NON_DEFAULT[name]
    model = reid_model_from_yaml(tmp_path, f'loss:\n  uncertainty:\n    {name}: {list(value)!r}\n')
    assert getattr(model.loss_weighting, name) == value


def test_unbounded_loss_weighting_from_yaml(tmp_path):
    pytest.importorskip('torchreid')
    model = reid_model_from_yaml(tmp_path, 'loss:\n  uncertainty:\n    log_var_bounds: null\n')
    assert model.loss_weighting.log_var_bounds is None


def test_the_adapters_build_the_core_without_its_classifiers(tmp_path):
    """Both toolboxes classify with their own heads: the core's classifier and GLCA's copy of it hold no weights."""
    pytest.importorskip('mmpretrain')
    pytest.importorskip('torchreid')
    from mmpretrain.registry import MODELS

    import dcal_plugin.mmpretrain  # noqa: F401
    backbone = MODELS.build(dict(type='DCALVisionTransformer', model_name='deit_tiny_patch16_224', img_size=32,
                                 depth=2))
    reid = reid_model_from_yaml(tmp_path, 'model:\n  use_glca: True\n')
    for dcal in (backbone.dcal, reid.dcal):
        assert isinstance(dcal.vit.head, torch.nn.Identity) and isinstance(dcal.glca_head, torch.nn.Identity)
        assert not [key for key in dcal.state_dict() if key.startswith(('vit.head.', 'glca_head.'))]
