"""DCALClassifier: the head has the backbone's branches, and one train step gives every parameter a gradient."""
import pytest
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import dcal_plugin.mmpretrain  # noqa: F401  (registers the modules)

BACKBONE = dict(type='DCALVisionTransformer', model_name='deit_tiny_patch16_224', img_size=32, patch_size=8, depth=2)
HEAD = dict(type='DCALClsHead', num_classes=3, in_channels=192)
SWITCHES = [dict(), dict(use_glca=False), dict(use_pwca=False), dict(use_glca=False, use_pwca=False),
            dict(query_selection='random'), dict(with_cp=True)]


@pytest.mark.parametrize('switches', SWITCHES, ids=lambda switches: str(switches or 'default'))
def test_every_parameter_gets_a_gradient_in_a_train_step(switches):
    model = MODELS.build(dict(type='DCALClassifier', backbone=dict(BACKBONE, **switches), head=HEAD)).train()
    assert (model.head.glca_fc is None) == (switches.get('use_glca') is False)
    samples = [DataSample().set_gt_label(label) for label in (0, 1, 2, 0)]
    losses = model.loss(torch.randn(4, 3, 32, 32), samples)
    sum(value for key, value in losses.items() if key.startswith('loss')).backward()
    assert [name for name, parameter in model.named_parameters() if parameter.grad is None] == []


def test_a_head_module_must_match_the_backbone():
    head = MODELS.build(HEAD)
    with pytest.raises(ValueError, match='head was built with use_glca=True, the backbone with use_glca=False'):
        MODELS.build(dict(type='DCALClassifier', backbone=dict(BACKBONE, use_glca=False), head=head))
