"""Every option of the core ``DCALViT`` reaches the model from an MMPretrain config and from a torchreid yaml config."""
import inspect

import pytest
import torch

from dcal_plugin.core import DCALViT

# A value other than the default for each option; the keys must be exactly DCALViT's options.
NON_DEFAULT = dict(local_query_ratio=0.5, glca_block_index=0, residual_weight=0.25, sa_only_inference=True,
                   use_glca=False, use_pwca=False, query_selection='random', pwca_partner_gradient=False)


def core_options():
    return {name: param.default for name, param in inspect.signature(DCALViT.__init__).parameters.items()
            if name not in ('self', 'vit')}


def test_the_list_covers_every_core_option_with_a_value_that_is_not_its_default():
    defaults = core_options()
    assert set(NON_DEFAULT) == set(defaults)
    for name, value in NON_DEFAULT.items():
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


@pytest.mark.parametrize('name', list(NON_DEFAULT))
def test_option_reaches_the_torchreid_model_from_yaml(name, tmp_path):
    pytest.importorskip('torchreid')
    from dcal_plugin.torchreid import build_dcal_reid, get_default_config
    from dcal_plugin.torchreid.config import model_kwargs

    cfg = get_default_config()
    value = NON_DEFAULT[name]
    (tmp_path / 'options.yaml').write_text(f'model:\n  {name}: {value!r}\n  timm_kwargs:\n    depth: 2\n')
    cfg.merge_from_file(str(tmp_path / 'options.yaml'))
    cfg.merge_from_list(['data.height', 32, 'data.width', 32])
    model = build_dcal_reid(num_classes=3, **model_kwargs(cfg))
    assert_option(model.dcal, name, value)
    if name == 'sa_only_inference':  # the retrieval feature is then SA's alone
        with torch.no_grad():
            assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, model.feature_dim)
