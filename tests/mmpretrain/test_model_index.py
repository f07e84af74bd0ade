"""mmpretrain's own model hub knows the shipped FGVC configs: list_models('*dcal*') lists each, get_model builds it."""
import mmpretrain
import torch

import dcal_plugin.mmpretrain  # noqa: F401 (what a user imports: it registers the configs with the model hub)

from .conftest import REPO


def test_list_models_lists_every_shipped_fgvc_config():
    configs = (REPO / 'configs').glob('dcal_*.py')
    assert sorted(mmpretrain.list_models('*dcal*')) == sorted(path.stem for path in configs)


def test_get_model_builds_a_config_by_name_without_weights():
    model = mmpretrain.get_model('dcal_swin-tiny_cub')  # no weights were trained: the config's model, no checkpoint
    assert type(model).__name__ == 'DCALClassifier' and type(model.backbone.dcal).__name__ == 'DCALSwin'
    assert model.head.sa_fc.out_features == 200 and model.head.glca_fc is None
    demo = mmpretrain.get_model('dcal_deit-tiny_digits-cub').eval()
    with torch.no_grad():
        [prediction] = demo.test_step({'inputs': [torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)]})
    assert prediction.pred_score.shape == (10,)
