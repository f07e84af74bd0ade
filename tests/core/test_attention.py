import pytest
import torch

from dcal_plugin.core import attend, attention
from dcal_plugin.core.attention import merge_heads, project_kv, project_q, project_qkv

from ..conftest import make_tiny_vit

# an out= tensor of the wrong shape is resized by torch with only this warning (and will fail in a later torch)
pytestmark = pytest.mark.filterwarnings('error:An output with one or more elements was resized')


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


needs_onednn = pytest.mark.skipif(attention.onednn_linear() is None, reason='this torch has no oneDNN linear op')


def taken_path(q, k):
    """Which of the two CPU implementations ``shared_softmax`` runs for ``q, k``."""
    taken, saved = [], {}
    for name in ('_probabilities_by_head', '_probabilities_by_tile'):
        saved[name] = getattr(attention, name)
        setattr(attention, name, lambda *args, name=name: taken.append(name) or (None, None))
    try:
        attention.shared_softmax(q, k)
    finally:
        for name, implementation in saved.items():
            setattr(attention, name, implementation)
    return taken


@needs_onednn
def test_onednn_linear_multiplies_by_the_transpose():
    a, b = torch.randn(2, 7, 5), torch.randn(4, 5)
    torch.testing.assert_close(attention.onednn_linear()(a, b), a @ b.T)


def test_onednn_linear_is_none_without_onednn(monkeypatch):
    attention.onednn_linear.cache_clear()
    monkeypatch.setattr(torch.backends.mkldnn, 'is_available', lambda: False)
    try:
        assert attention.onednn_linear() is None
    finally:
        attention.onednn_linear.cache_clear()


@needs_onednn
def test_shared_softmax_goes_head_by_head_for_large_float32_cpu_maps(monkeypatch):
    q, k, _ = qkv(nq=5, nk=9)
    monkeypatch.setattr(attention, 'ONEDNN_MIN_SCORES', 5 * 9)
    assert taken_path(q, k) == ['_probabilities_by_head']
    assert taken_path(q.double(), k.double()) == ['_probabilities_by_tile']
    with torch.backends.mkldnn.flags(enabled=False):
        assert taken_path(q, k) == ['_probabilities_by_tile']
    monkeypatch.setattr(attention, 'CPU_TILE_BYTES', 4 * 9 * 4)  # blocks of 4 rows: 36 scores per product
    assert taken_path(q, k) == ['_probabilities_by_tile']
    monkeypatch.setattr(attention, 'ONEDNN_MIN_SCORES', 4 * 9)
    assert taken_path(q, k) == ['_probabilities_by_head']
    monkeypatch.setattr(attention, 'onednn_linear', lambda: None)
    assert taken_path(q, k) == ['_probabilities_by_tile']


@needs_onednn
@pytest.mark.parametrize('tile_rows', [5, 2])  # whole images; blocks of 2 query rows (the last of 1)
def test_head_by_head_path_matches_explicit_formula(monkeypatch, tile_rows):
    q, k, v = qkv(nq=5, nk=9)
    want_out, want_probs = explicit_attention(q, k, v)
    monkeypatch.setattr(attention, 'ONEDNN_MIN_SCORES', 1)
    monkeypatch.setattr(attention, 'CPU_TILE_BYTES', tile_rows * 9 * 4)
    out, weights = attend(q, k, v, need_weights=True)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention.attention_map(q, k), want_probs.mean(1), rtol=1e-5, atol=1e-6)
    assert out.transpose(1, 2).is_contiguous()  # merging the heads is a view


@pytest.mark.parametrize('min_scores', [1, 1 << 62])  # head by head (where oneDNN is), one tile
def test_attention_dropout_drops_from_the_output_not_from_the_map(monkeypatch, min_scores):
    """Output = (P ⊙ M / (1 - p)) v with the mask M that dropout drew; the map is the mean of P itself."""
    q, k, v = qkv()
    monkeypatch.setattr(attention, 'ONEDNN_MIN_SCORES', min_scores)
    dropped, real_dropout = [], torch.nn.functional.dropout

    def recording(probabilities, p, **kwargs):
        dropped.append(real_dropout(probabilities, p=p, **kwargs))
        return dropped[-1]

    monkeypatch.setattr(torch.nn.functional, 'dropout', recording)
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = attend(q, k, v, dropout_p=0.5, need_weights=True)
    dropped = torch.stack(dropped).reshape(want_probs.shape)  # one call per image and head, or one for all
    kept = dropped != 0
    assert 0.3 < kept.float().mean() < 0.7
    torch.testing.assert_close(dropped, torch.where(kept, want_probs / 0.5, 0.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, dropped @ v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)


def test_onednn_probe_leaves_the_random_stream_alone():
    attention.onednn_linear.cache_clear()
    torch.manual_seed(0)
    attention.onednn_linear()
    drawn = torch.rand(3)
    torch.manual_seed(0)
    torch.testing.assert_close(drawn, torch.rand(3))


@pytest.mark.parametrize('need_weights', [False, True])
def test_fused_attention_under_autograd_applies_dropout_as_torch_does(need_weights):
    q, k, v = qkv()
    q.requires_grad_()
    torch.manual_seed(3)
    out, weights = attend(q, k, v, dropout_p=0.3, need_weights=need_weights)
    torch.manual_seed(3)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    torch.testing.assert_close(out, want)
    assert not torch.allclose(out, explicit_attention(q.detach(), k, v)[0], atol=1e-3)
    assert (weights is None) != need_weights


@pytest.mark.parametrize('need_weights', [False, True])
def test_attend_keeps_float64(need_weights):
    q, k, v = (t.double() for t in qkv())
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = attend(q, k, v, need_weights=need_weights)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, want_out.double(), rtol=1e-12, atol=1e-12)
    if need_weights:
        torch.testing.assert_close(weights, want_probs.double().mean(1), rtol=1e-12, atol=1e-12)


def test_tiles_of_two_images_with_a_last_tile_of_one(monkeypatch):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 3, n, 8, generator=g) for n in (5, 9, 9))
    monkeypatch.setattr(attention, 'ONEDNN_MIN_SCORES', 1 << 62)
    monkeypatch.setattr(attention, "CPU_TILE_BYTES", 2 * 3 * 5 * 9 * 4)  # two images of 3 heads x 5 rows x 9 keys
    assert list(attention._tiles(q, 9)) == [(slice(0, 2), slice(None)), (slice(2, 4), slice(None))]
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = attend(q, k, v, need_weights=True)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('batch,heads,queries,tile_rows,threads', [
    (4, 3, 5, 5, 2), (4, 3, 5, 10, 2), (3, 3, 5, 15, 1), (4, 3, 7, 2, 2), (5, 3, 7, 3, 2), (4, 6, 7, 3, 4),
    (2, 3, 7, 1, 2), (3, 2, 9, 4, 3),
])
def test_tiles_cover_every_image_and_row_once_within_the_tile_size(monkeypatch, batch, heads, queries, tile_rows,
                                                                     threads):
    num_keys = 9
    monkeypatch.setattr(attention, 'CPU_TILE_BYTES', tile_rows * heads * num_keys * 4)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: threads)
    q = torch.empty(batch, heads, queries, 8)
    covered = torch.zeros(batch, queries, dtype=torch.long)
    for images, rows in attention._tiles(q, num_keys):
        tile = covered[images, rows]
        assert tile.numel() <= max(tile_rows, queries) * (1 if tile_rows < queries else tile_rows // queries)
        covered[images, rows] += 1
    assert torch.equal(covered, torch.ones_like(covered))


def test_row_tiles_span_images_so_that_products_split_evenly_over_the_threads(monkeypatch):
    monkeypatch.setattr(attention, 'CPU_TILE_BYTES', 4 * 3 * 9 * 4)  # 4 rows of 3 heads per tile
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    tiles = list(attention._tiles(torch.empty(4, 3, 7, 8), 9))
    assert tiles[:2] == [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4))]  # 3 heads, 2 threads: 2 images
    assert len(tiles) == 2 * 4


@pytest.mark.parametrize('grad_on', ['q', 'k', 'v'])
def test_attend_records_the_gradient_of_whichever_input_needs_it(grad_on):
    tensors = dict(zip('qkv', qkv()))
    tensors[grad_on].requires_grad_()
    out, weights = attend(tensors['q'], tensors['k'], tensors['v'], need_weights=True)
    out.sum().backward()
    assert tensors[grad_on].grad.abs().sum() > 0
    torch.testing.assert_close(weights, explicit_attention(*(t.detach() for t in tensors.values()))[1].mean(1),
                               rtol=1e-5, atol=1e-6)
