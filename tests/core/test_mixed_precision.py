"""The model under CPU bfloat16 autocast: maps and rollout in float32 (the top-R of float32 kept), train and eval."""
import pytest
import torch
import torch.nn.functional as F

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss

from ..conftest import make_tiny_vit


def bf16():
    return torch.autocast('cpu', dtype=torch.bfloat16)


def overlap(a, b):
    """Mean share of the local queries ``[B, R]`` two selections have in common."""
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / a.numel()


@pytest.mark.parametrize('size', [64, 128])
def test_bf16_eval_selects_the_float32_local_queries_and_sa_is_timms_bf16_forward(size):
    torch.manual_seed(0)
    model = DCALViT(make_tiny_vit(img_size=size), local_query_ratio=0.3).eval()
    images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(images)
        with bf16():
            half = model(images)
            timm_half = model.vit(images)
    assert overlap(half.local_query_index, full.local_query_index) >= 0.95
    torch.testing.assert_close(half.sa_logits, timm_half, rtol=0, atol=0)  # SA is timm's own bf16 forward
    sa_error = (half.sa_logits.float() - full.sa_logits).abs().max()
    assert (half.glca_logits.float() - full.glca_logits).abs().max() <= 4 * sa_error  # of the order of timm's own


def test_bf16_maps_and_rollout_are_float32(monkeypatch):
    from dcal_plugin.core import deferred_map

    model = DCALViT(make_tiny_vit()).eval()
    dtypes, chunks = [], deferred_map._chunks

    def recording_chunks(q, k, chunk_bytes):
        for images, rows, probabilities in chunks(q, k, chunk_bytes):
            dtypes.append((q.dtype, probabilities.dtype, torch.is_autocast_enabled('cpu')))
            yield images, rows, probabilities

    monkeypatch.setattr(deferred_map, '_chunks', recording_chunks)
    with torch.no_grad(), bf16():
        model(torch.randn(2, 3, 64, 64))
    # queries and keys recomputed in bfloat16 as the forward computes them, the probabilities in float32
    assert dtypes == [(torch.bfloat16, torch.float32, False)] * len(model.vit.blocks)


def test_bf16_train_step_runs_with_finite_gradients_close_to_float32():
    model = DCALViT(make_tiny_vit()).train()
    images, labels, partner = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])
    losses = {}
    for name, context in (('float32', torch.autocast('cpu', enabled=False)), ('bfloat16', bf16())):
        model.zero_grad(set_to_none=True)
        with context:
            out = model(images, partner)
            branch = [F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)]
        loss = UncertaintyWeightedLoss()(branch)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name
        losses[name] = loss.item()
    assert losses['bfloat16'] == pytest.approx(losses['float32'], rel=0.02)


def in_half_precision(model, mode):
    """``(model, context)``: float32 weights under bfloat16 autocast, or the model cast to bfloat16 (no autocast)."""
    if mode == 'autocast':
        return model, bf16()
    return model.to(torch.bfloat16), torch.autocast('cpu', enabled=False)


@pytest.mark.parametrize('mode', ['autocast', 'bf16 model'])
def test_bf16_attention_maps_and_rollout_map_are_float32_tensors_close_to_float32s(mode):
    """Tolerances: maps are probabilities, and bfloat16 keeps 8 significant bits, so entries differ by 2^-8 on
    average; one entry moves by up to a quarter of its score's error (softmax's slope p(1-p) <= 1/4), and these
    weights' scores are steep (|q·k/√D| up to 45, where one bfloat16 step is 0.25), errors adding up over blocks."""
    model = DCALViT(make_tiny_vit(), local_query_ratio=0.3).eval()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    full_maps, full_rollout = model.attention_maps(images), model.rollout_map(images)
    model, context = in_half_precision(model, mode)
    with context:
        maps, rollout = model.attention_maps(images), model.rollout_map(images)
    assert len(maps) == len(full_maps)
    for half, full in zip(maps, full_maps):
        assert isinstance(half, torch.Tensor) and half.dtype == torch.float32 and half.shape == (4, 17, 17)
        assert (half - full).abs().mean() <= 2 ** -8 and (half - full).abs().max() <= 0.25
    assert rollout.dtype == torch.float32 and rollout.shape == (4, 4, 4)
    # a tenth of the largest score (0.16): each map enters mixed 1:1 with the identity, the class row averaging its
    # errors
    torch.testing.assert_close(rollout, full_rollout, rtol=0, atol=2 ** -6)
    count = 5  # GLCA's top-R at ratio 0.3 of 16 patches
    top = [set(row.tolist()) for row in rollout.flatten(1).topk(count).indices]
    full_top = [set(row.tolist()) for row in full_rollout.flatten(1).topk(count).indices]
    assert sum(len(a & b) for a, b in zip(top, full_top)) >= 0.9 * 4 * count
