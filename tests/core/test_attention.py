import pytest
import torch

from dcal_plugin.core import attend
from dcal_plugin.core.attention import merge_heads, project_kv, project_q, project_qkv

from ..conftest import make_tiny_vit


def explicit_attention(q, k, v):
    """Loop over batch and heads: softmax(q kᵀ/√D) v and the probabilities."""
    out, probs = torch.empty_like(q), torch.empty(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            p = torch.softmax(q[b, h] @ k[b, h].T / q.shape[-1] ** 0.5, dim=-1)
            out[b, h], probs[b, h] = p @ v[b, h], p
    return out, probs


def qkv(nq=5, nk=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, nq, 8, generator=g), torch.randn(2, 3, nk, 8, generator=g),
            torch.randn(2, 3, nk, 8, generator=g))


@pytest.mark.parametrize('grad', [False, True])
def test_attend_matches_explicit_formula_with_and_without_weights(grad):
    q, k, v = qkv()
    want_out, want_probs = explicit_attention(q, k, v)
    q.requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        fused, none = attend(q, k, v)
        out, weights = attend(q, k, v, need_weights=True)
    assert none is None
    torch.testing.assert_close(fused, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    assert not weights.requires_grad
    assert out.requires_grad == grad


def test_projections_slice_the_same_qkv_weights():
    vit = make_tiny_vit()
    attn, x = vit.blocks[0].attn, torch.randn(2, 17, 192)
    q, k, v = project_qkv(attn, x)
    assert q.shape == (2, 3, 17, 64)
    torch.testing.assert_close(project_q(attn, x[:, 3:7]), q[:, :, 3:7], rtol=1e-5, atol=1e-5)
    k2, v2 = project_kv(attn, x)
    torch.testing.assert_close(k2, k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v2, v, rtol=1e-5, atol=1e-5)


def test_merge_heads_equals_timm_attention():
    vit = make_tiny_vit().eval()
    attn, x = vit.blocks[1].attn, torch.randn(2, 17, 192)
    q, k, v = project_qkv(attn, x)
    out, _ = attend(q, k, v)
    torch.testing.assert_close(merge_heads(attn, out), attn(x), rtol=1e-5, atol=1e-5)


def test_scaled_contiguous_queries_of_permuted_qkv():
    from dcal_plugin.core.attention import scaled_contiguous_queries

    qkv = torch.randn(2, 7, 3, 3, 8).permute(2, 0, 3, 1, 4)  # timm's [3, B, H, N, D] view of one qkv output
    q = qkv[0]
    assert not q.is_contiguous()
    scaled = scaled_contiguous_queries(q)
    assert scaled.is_contiguous() and scaled.shape == (2, 3, 7, 8)
    torch.testing.assert_close(scaled, q / 8 ** 0.5)


def test_write_head_mean_into_a_tile_of_rows():
    from dcal_plugin.core.attention import write_head_mean

    probabilities = torch.rand(2, 3, 4, 9)
    weights = torch.zeros(3, 6, 9)
    write_head_mean(probabilities, torch.full((2, 1, 3), 1 / 3), weights[1:3, 2:6])
    torch.testing.assert_close(weights[1:3, 2:6], probabilities.mean(1))
    assert weights[0].eq(0).all() and weights[:, :2].eq(0).all()
