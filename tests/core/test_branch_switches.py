"""The ablation switches ``use_glca`` / ``use_pwca``: a switched-off branch is absent, the others compute what the full
model computes."""
import copy

import pytest
import torch

from dcal_plugin.core import DCALViT

from ..conftest import make_tiny_vit


def images(batch=4, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def full_and_ablated(**switches):
    """The full DCAL and a copy with ``switches``, sharing the SA (and GLCA) weights."""
    full = DCALViT(make_tiny_vit(), local_query_ratio=0.25)
    ablated = DCALViT(copy.deepcopy(full.vit), local_query_ratio=0.25, **switches)
    if ablated.use_glca:
        ablated.load_state_dict(full.state_dict())
    return full, ablated


def test_sa_only_is_timms_plain_vit_in_train_and_eval():
    vit = make_tiny_vit()
    model = DCALViT(copy.deepcopy(vit), use_glca=False, use_pwca=False)
    assert not any(name.startswith('glca') for name, _ in model.named_parameters())
    x = images()
    for mode in (True, False):
        model.train(mode), vit.train(mode)
        out = model(x)
        torch.testing.assert_close(out.sa_logits, vit(x), rtol=0, atol=0)
        assert out.glca_logits is None and out.pwca_logits is None and out.local_query_index is None
    assert model.train()(images(batch=1)).sa_logits.shape == (1, 5)  # no partner needed


def test_without_glca_sa_and_pwca_equal_the_full_models():
    full, ablated = full_and_ablated(use_glca=False)
    partner = torch.tensor([2, 3, 0, 1])
    x = images()
    want, got = full.train()(x, partner), ablated.train()(x, partner)
    torch.testing.assert_close(got.sa_logits, want.sa_logits)
    torch.testing.assert_close(got.pwca_logits, want.pwca_logits)
    assert got.glca_logits is None and got.glca_feature is None
    assert ablated.eval()(x).reid_feature.shape == (4, 192)  # SA only at test time


def test_without_pwca_sa_and_glca_equal_the_full_models():
    full, ablated = full_and_ablated(use_pwca=False)
    x = images()
    want, got = full.train()(x), ablated.train()(x)
    torch.testing.assert_close(got.sa_logits, want.sa_logits)
    torch.testing.assert_close(got.glca_logits, want.glca_logits)
    assert torch.equal(got.local_query_index, want.local_query_index)
    assert got.pwca_logits is None
    assert ablated.train()(images(batch=1)).glca_logits.shape == (1, 5)


@pytest.mark.parametrize('switches', [dict(use_glca=False), dict(use_glca=False, use_pwca=False)])
def test_timm_checkpoint_loads_without_glca(tmp_path, switches):
    source = make_tiny_vit()
    path = tmp_path / 'vit.pth'
    torch.save(source.state_dict(), path)
    model = DCALViT(make_tiny_vit(), **switches)
    model.load_timm_checkpoint(str(path))
    torch.testing.assert_close(model.vit.head.weight, source.head.weight)
