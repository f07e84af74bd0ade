"""DCAL's names in torchreid's model factory: build_model builds them; a changed torchreid layout fails clearly."""
import types

import pytest
import torch

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.torchreid import MODEL_NAMES, DCALReID, registry  # noqa: E402
from dcal_plugin.torchreid.registry import FACTORY_NAMES  # noqa: E402


def test_build_model_builds_a_dcal_deit_tiny_at_256x128():
    model = torchreid.models.build_model('dcal_deit_tiny', num_classes=7, loss='triplet', pretrained=False)
    assert isinstance(model, DCALReID) and model.num_classes == 7
    assert model.dcal.vit.pretrained_cfg['architecture'] == 'deit_tiny_patch16_224'
    assert model.dcal.grid_size == (16, 8) and model.dcal.local_query_ratio == 0.3


@pytest.mark.parametrize('name', sorted(FACTORY_NAMES))
def test_every_name_reaches_its_timm_model_at_its_size(name, monkeypatch):
    calls = []
    monkeypatch.setattr(registry, 'build_dcal_reid', lambda *args, **kwargs: calls.append((args, kwargs)) or 'built')
    assert torchreid.models.build_model(name, num_classes=3, loss='softmax', pretrained=False) == 'built'
    base = name.rsplit('_', 1)[0] if name.endswith(('_256x256', '_224x224')) else name
    stride = 14 if 'dinov2' in name else 16  # the paper's token grids: 16x8 for persons, 16x16 for VeRi-776
    size = (16 * stride, 16 * stride) if base != name else (16 * stride, 8 * stride)
    assert calls == [((MODEL_NAMES[base], 3), {'img_size': size, 'pretrained': False, 'dynamic_img_size': True})]


def test_a_factory_model_takes_the_data_managers_size(veri_data, tmp_path):
    from dcal_plugin.torchreid import build_engine
    from dcal_plugin.torchreid.engine import check_image_size

    from .helpers import tiny_config

    model = torchreid.models.build_model('dcal_deit_tiny', num_classes=6, pretrained=False)  # built at 256x128
    datamanager = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path)).datamanager  # 32x32
    check_image_size(datamanager, model)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2 * model.dcal.vit.embed_dim)
    datamanager.height = 40
    with pytest.raises(ValueError, match=r'40x32 images, which the model.s 16x16 patches do not tile'):
        check_image_size(datamanager, model)


def test_the_256x256_name_builds_the_papers_veri776_size():
    model = torchreid.models.build_model('dcal_deit_tiny_256x256', num_classes=4, pretrained=False)
    assert model.dcal.grid_size == (16, 16)


def test_build_model_refuses_unknown_losses():
    with pytest.raises(ValueError, match='loss must be'):
        torchreid.models.build_model('dcal_deit_small', num_classes=3, loss='arcface', pretrained=False)


def test_registration_writes_into_the_factory_build_model_reads():
    factory = {}
    module = types.ModuleType('fake_models')
    vars(module).update({'__model_factory': factory, 'build_model': lambda name, **kwargs: factory[name](**kwargs)})
    registry.register_models(module)
    assert sorted(factory) == sorted(FACTORY_NAMES) and set(MODEL_NAMES) < set(factory)


@pytest.mark.parametrize('contents', [
    {'build_model': print}, {'__model_factory': {}}, {'__model_factory': [], 'build_model': print}])
def test_a_changed_torchreid_layout_fails_with_a_clear_message(contents):
    module = types.ModuleType('changed_models')
    vars(module).update(contents)
    with pytest.raises(RuntimeError, match="layout has changed: changed_models has no dict '__model_factory'"):
        registry.register_models(module)
