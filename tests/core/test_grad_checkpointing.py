"""Activation checkpointing of every stream: timm's switch honoured, same loss and gradients, less peak memory."""
import pytest
import torch
import torch.nn.functional as F

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss

from ..conftest import make_tiny_vit

def train_loss(model, images, labels):
    out = model(images, torch.arange(1, len(images) + 1) % len(images))  # each image's partner: the next one
    losses = [None if logits is None else F.cross_entropy(logits, labels)
              for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)]
    return UncertaintyWeightedLoss()(losses)


def loss_and_gradients(model, images, labels):
    torch.manual_seed(1)  # drop path draws the same masks in both runs (checkpointing replays the random state)
    model.zero_grad(set_to_none=True)
    loss = train_loss(model, images, labels)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('options', [dict(), dict(use_pwca=False), dict(use_glca=False, use_pwca=False),
                                     dict(query_selection='random')])
def test_timms_switch_checkpoints_every_block_of_every_stream(monkeypatch, options):
    model = DCALViT(make_tiny_vit(), **options).train()
    model.vit.set_grad_checkpointing(True)  # timm's own API, on the SA branch's model
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint',
                        lambda fn, *a, **k: calls.append(fn) or checkpoint(fn, *a, **k))
    train_loss(model, torch.randn(4, 3, 64, 64), torch.arange(4)).backward()
    assert len(calls) == len(model.vit.blocks) + model.use_glca  # each SA(+PWCA) block, and GLCA's
    calls.clear()
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 64, 64))
    assert calls == []  # nothing to save without autograd


@pytest.mark.parametrize('options', [dict(), dict(pwca_partner_gradient=False), dict(use_glca=False, use_pwca=False)])
def test_checkpointing_gives_the_same_loss_and_gradients(options):
    vit = make_tiny_vit(drop_path_rate=0.1)
    model = DCALViT(vit, **options).train()
    images, labels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    want_loss, want = loss_and_gradients(model, images, labels)
    model.set_grad_checkpointing()  # on, as timm's default
    assert model.grad_checkpointing and model.vit.grad_checkpointing
    loss, got = loss_and_gradients(model, images, labels)
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=0)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_lowers_the_peak_memory_of_a_train_step():
    from benchmarks.measure import peak_step_bytes

    images, labels = torch.randn(8, 3, 128, 128), torch.arange(8) % 5
    peaks = {}
    for enabled in (False, True):
        model = DCALViT(make_tiny_vit(img_size=128, depth=4), grad_checkpointing=enabled).train()
        peaks[enabled] = peak_step_bytes(lambda: train_loss(model, images, labels).backward(), lambda: 0,
                                         torch.device('cpu'))
    assert peaks[True] < 0.6 * peaks[False], peaks  # measured: 0.41
