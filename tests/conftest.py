"""Shared fixtures: small timm ViTs with distinctive (non-uniform) attention, and their checkpoint files."""
import pytest
import timm
import torch

TINY = dict(model_name='deit_tiny_patch16_224', img_size=64, depth=3)


def make_tiny_vit(num_classes: int = 5, seed: int = 0, **overrides):
    """A 3-block DeiT-Tiny at 64×64 (16 patches) whose weights give peaked, well-separated attention."""
    kwargs = dict(TINY, **overrides)
    torch.manual_seed(seed)
    vit = timm.create_model(kwargs.pop('model_name'), pretrained=False, num_classes=num_classes, **kwargs)
    with torch.no_grad():
        for name, param in vit.named_parameters():
            if name.endswith('qkv.weight'):
                param.normal_(0.0, 0.25)
            elif name in ('cls_token', 'pos_embed'):
                param.normal_(0.0, 1.0)
    return vit


@pytest.fixture
def tiny_vit():
    return make_tiny_vit()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """(timm model, path of ``torch.save(model.state_dict())``)."""
    vit = make_tiny_vit().eval()
    path = tmp_path / 'deit_tiny_tiny.pth'
    torch.save(vit.state_dict(), path)
    return vit, path
