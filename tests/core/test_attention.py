"""The attention every branch shares, and how an SA block's map is obtained, against explicit loops."""
import pytest
import torch

from dcal_plugin.core import attend, attend_with_map
from dcal_plugin.core.attention import MapRows, merge_heads, project_kv, project_q, project_qk, project_qkv
from dcal_plugin.core.deferred_map import read_map as read

from ..conftest import make_tiny_vit


def explicit_attention(q, k, v):
    """Loop over batch and heads: softmax(q kᵀ/√D) v and the probabilities."""
    out, probs = torch.empty_like(q), q.new_empty(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            p = torch.softmax(q[b, h] @ k[b, h].T / q.shape[-1] ** 0.5, dim=-1)
            out[b, h], probs[b, h] = p @ v[b, h], p
    return out, probs


def qkv(nq=5, nk=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, nq, 8, generator=g), torch.randn(2, 3, nk, 8, generator=g),
            torch.randn(2, 3, nk, 8, generator=g))


def test_attend_matches_explicit_formula():
    q, k, v = qkv()
    torch.testing.assert_close(attend(q, k, v), explicit_attention(q, k, v)[0], rtol=1e-5, atol=1e-6)


def recomputing(q, k):
    """A deferred map's ``recompute`` that gives ``q, k`` without gradient."""
    return lambda: (q.detach(), k.detach())


@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('rows', list(MapRows))
def test_attend_with_map_gives_the_output_and_the_head_mean_of_the_rows_asked(grad, rows):
    q, k, v = qkv()
    want_out, want_probs = explicit_attention(q, k, v)
    want_map = want_probs.mean(1)[:, :1] if rows is MapRows.CLASS_TOKEN else want_probs.mean(1)
    q.requires_grad_(grad)
    out, attention_map = attend_with_map(q, k, v, 0.0, rows, recomputing(q, k))
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(read(attention_map), want_map, rtol=1e-5, atol=1e-6)
    assert not read(attention_map).requires_grad
    assert out.requires_grad == grad


@pytest.mark.parametrize('grad,rows,given,shared', [
    (False, MapRows.ALL, True, True), (True, MapRows.ALL, True, False), (False, MapRows.ALL, False, False),
    (False, MapRows.CLASS_TOKEN, True, False), (True, MapRows.CLASS_TOKEN, True, False)])
def test_one_softmax_gives_output_and_map_only_on_cpu_without_autograd_for_whole_maps(grad, rows, given, shared):
    """Shared: ``softmax`` gives both; else fused attention gives the output, the map is deferred, never whole.

    A deferred whole map is the ``recompute`` given (queries and keys recomputed from the block's
    input when read); a class row keeps its own queries' first row and keys.
    """
    q, k, v = qkv()
    q.requires_grad_(grad)
    calls, softmax_out, softmax_map = [], torch.zeros(2, 3, 5, 8), torch.zeros(2, 5, 9)

    def softmax(*args):
        calls.append(len(args))
        return softmax_out, softmax_map

    def recompute():
        raise AssertionError('recomputed')

    out, attention_map = attend_with_map(q, k, v, 0.0, rows, recompute, softmax if given else None)
    assert (out is softmax_out) == shared and (attention_map is softmax_map) == shared
    assert calls == ([4] if shared else [])
    if not shared and rows is MapRows.ALL:
        assert attention_map.queries_and_keys is recompute
    if rows is MapRows.CLASS_TOKEN:
        class_queries, keys = attention_map.queries_and_keys()
        assert torch.equal(class_queries, q[:, :, :1]) and torch.equal(keys, k) and not class_queries.requires_grad


@pytest.mark.parametrize('rows', [None, MapRows.ALL])
def test_fused_attention_under_autograd_applies_dropout_as_torch_does(rows):
    q, k, v = qkv()
    q.requires_grad_()
    torch.manual_seed(3)
    out = attend(q, k, v, 0.3) if rows is None else attend_with_map(q, k, v, 0.3, rows, recomputing(q, k))[0]
    torch.manual_seed(3)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    torch.testing.assert_close(out, want)
    assert not torch.allclose(out, explicit_attention(q.detach(), k, v)[0], atol=1e-3)


@pytest.mark.parametrize('grad_on', ['q', 'k', 'v'])
def test_attend_with_map_records_the_gradient_of_whichever_input_needs_it(grad_on):
    tensors = dict(zip('qkv', qkv()))
    tensors[grad_on].requires_grad_()
    out, attention_map = attend_with_map(tensors['q'], tensors['k'], tensors['v'], 0.0, MapRows.ALL,
                                         recomputing(tensors['q'], tensors['k']))
    out.sum().backward()
    assert tensors[grad_on].grad.abs().sum() > 0
    torch.testing.assert_close(read(attention_map),
                               explicit_attention(*(t.detach() for t in tensors.values()))[1].mean(1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('qkv_bias', [True, False])
def test_projections_slice_the_same_qkv_weights(qkv_bias):
    vit = make_tiny_vit(qkv_bias=qkv_bias)
    attn, x = vit.blocks[0].attn, torch.randn(2, 17, 192)
    q, k, v = project_qkv(attn, x)
    assert q.shape == (2, 3, 17, 64)
    torch.testing.assert_close(project_q(attn, x[:, 3:7]), q[:, :, 3:7], rtol=1e-5, atol=1e-5)
    k2, v2 = project_kv(attn, x)
    torch.testing.assert_close(k2, k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v2, v, rtol=1e-5, atol=1e-5)
    q3, k3 = project_qk(attn, x)
    torch.testing.assert_close(q3, q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k3, k, rtol=1e-5, atol=1e-5)


def test_merge_heads_equals_timm_attention():
    vit = make_tiny_vit().eval()
    attn, x = vit.blocks[1].attn, torch.randn(2, 17, 192)
    q, k, v = project_qkv(attn, x)
    out = attend(q, k, v)
    torch.testing.assert_close(merge_heads(attn, out), attn(x), rtol=1e-5, atol=1e-5)
