"""The CPU-aware kernel behind the rollout's maps against an explicit loop, at thresholds passed as arguments."""
import inspect

import pytest
import torch

from dcal_plugin.core import attention_map_kernel as kernel
from dcal_plugin.core.attention_map_kernel import softmax_with_head_mean

from .test_attention import explicit_attention, qkv

# an out= tensor of the wrong shape is resized by torch with only this warning (and will fail in a later torch)
pytestmark = pytest.mark.filterwarnings('error:An output with one or more elements was resized')


def test_scaled_contiguous_queries_of_permuted_qkv():
    from dcal_plugin.core.attention_map_kernel import scaled_contiguous_queries

    qkv = torch.randn(2, 7, 3, 3, 8).permute(2, 0, 3, 1, 4)  # timm's [3, B, H, N, D] view of one qkv output
    q = qkv[0]
    assert not q.is_contiguous()
    scaled = scaled_contiguous_queries(q)
    assert scaled.is_contiguous() and scaled.shape == (2, 3, 7, 8)
    torch.testing.assert_close(scaled, q / 8 ** 0.5)


def test_write_head_mean_into_a_tile_of_rows():
    from dcal_plugin.core.attention_map_kernel import write_head_mean

    probabilities = torch.rand(2, 3, 4, 9)
    weights = torch.zeros(3, 6, 9)
    write_head_mean(probabilities, torch.full((2, 1, 3), 1 / 3), weights[1:3, 2:6])
    torch.testing.assert_close(weights[1:3, 2:6], probabilities.mean(1))
    assert weights[0].eq(0).all() and weights[:, :2].eq(0).all()


needs_onednn = pytest.mark.skipif(kernel.onednn_linear() is None, reason='this torch has no oneDNN linear op')


def taken_path(monkeypatch, q, k, **thresholds):
    """Which of the two CPU implementations ``softmax_with_head_mean`` runs for ``q, k`` at ``thresholds``."""
    taken = []
    with monkeypatch.context() as patched:
        for name in ('_by_head', '_by_tile'):
            patched.setattr(kernel, name, lambda *args, name=name: taken.append(name) or (None, None))
        softmax_with_head_mean(q, k, **thresholds)
    return taken


@needs_onednn
def test_onednn_linear_multiplies_by_the_transpose():
    a, b = torch.randn(2, 7, 5), torch.randn(4, 5)
    torch.testing.assert_close(kernel.onednn_linear()(a, b), a @ b.T)


def test_onednn_linear_is_none_without_onednn(monkeypatch):
    kernel.onednn_linear.cache_clear()
    monkeypatch.setattr(torch.backends.mkldnn, 'is_available', lambda: False)
    try:
        assert kernel.onednn_linear() is None
    finally:
        kernel.onednn_linear.cache_clear()


@needs_onednn
def test_large_float32_cpu_maps_go_head_by_head(monkeypatch):
    q, k, _ = qkv(nq=5, nk=9)
    assert taken_path(monkeypatch, q, k, onednn_min_scores=5 * 9) == ['_by_head']
    assert taken_path(monkeypatch, q, k, onednn_min_scores=5 * 9 + 1) == ['_by_tile']
    assert taken_path(monkeypatch, q.double(), k.double(), onednn_min_scores=5 * 9) == ['_by_tile']
    with torch.backends.mkldnn.flags(enabled=False):
        assert taken_path(monkeypatch, q, k, onednn_min_scores=5 * 9) == ['_by_tile']
    four_rows = 4 * 9 * 4  # blocks of 4 rows: 36 scores per product
    assert taken_path(monkeypatch, q, k, tile_bytes=four_rows, onednn_min_scores=5 * 9) == ['_by_tile']
    assert taken_path(monkeypatch, q, k, tile_bytes=four_rows, onednn_min_scores=4 * 9) == ['_by_head']
    monkeypatch.setattr(kernel, 'onednn_linear', lambda: None)
    assert taken_path(monkeypatch, q, k, onednn_min_scores=1) == ['_by_tile']


def test_default_thresholds_are_the_swept_ones():
    assert (kernel.TILE_BYTES, kernel.ONEDNN_MIN_SCORES) == (16 << 20, 300 * 300)
    signature = inspect.signature(softmax_with_head_mean).parameters
    assert (signature['tile_bytes'].default, signature['onednn_min_scores'].default) == (16 << 20, 300 * 300)


@needs_onednn
@pytest.mark.parametrize('tile_rows', [5, 2])  # whole images; blocks of 2 query rows (the last of 1)
def test_head_by_head_path_matches_explicit_formula(monkeypatch, tile_rows):
    q, k, v = qkv(nq=5, nk=9)
    want_out, want_probs = explicit_attention(q, k, v)
    thresholds = dict(onednn_min_scores=1, tile_bytes=tile_rows * 9 * 4)
    assert taken_path(monkeypatch, q, k, **thresholds) == ['_by_head']
    out, weights = softmax_with_head_mean(q, k, v, **thresholds)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    none, map_only = softmax_with_head_mean(q, k, **thresholds)
    assert none is None
    torch.testing.assert_close(map_only, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    assert out.transpose(1, 2).is_contiguous()  # merging the heads is a view


@pytest.mark.parametrize('min_scores', [1, 1 << 62])  # head by head (where oneDNN is), one tile
def test_attention_dropout_drops_from_the_output_not_from_the_map(monkeypatch, min_scores):
    """Output = (P ⊙ M / (1 - p)) v with the mask M that dropout drew; the map is the mean of P itself."""
    q, k, v = qkv()
    dropped, real_dropout = [], torch.nn.functional.dropout

    def recording(probabilities, p, **kwargs):
        dropped.append(real_dropout(probabilities, p=p, **kwargs))
        return dropped[-1]

    monkeypatch.setattr(torch.nn.functional, 'dropout', recording)
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = softmax_with_head_mean(q, k, v, dropout_p=0.5, onednn_min_scores=min_scores)
    dropped = torch.stack(dropped).reshape(want_probs.shape)  # one call per image and head, or one for all
    kept = dropped != 0
    assert 0.3 < kept.float().mean() < 0.7
    torch.testing.assert_close(dropped, torch.where(kept, want_probs / 0.5, 0.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, dropped @ v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)


def test_onednn_probe_leaves_the_random_stream_alone():
    kernel.onednn_linear.cache_clear()
    torch.manual_seed(0)
    kernel.onednn_linear()
    drawn = torch.rand(3)
    torch.manual_seed(0)
    torch.testing.assert_close(drawn, torch.rand(3))


def test_float64_stays_float64():
    q, k, v = (t.double() for t in qkv())
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = softmax_with_head_mean(q, k, v, onednn_min_scores=1)
    assert out.dtype == weights.dtype == torch.float64
    torch.testing.assert_close(out, want_out.double(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, want_probs.double().mean(1), rtol=1e-12, atol=1e-12)


def test_tiles_of_two_images_with_a_last_tile_of_one(monkeypatch):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 3, n, 8, generator=g) for n in (5, 9, 9))
    two_images = 2 * 3 * 5 * 9 * 4  # two images of 3 heads x 5 rows x 9 keys
    assert list(kernel.tiles(q, 9, two_images)) == [(slice(0, 2), slice(None)), (slice(2, 4), slice(None))]
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = softmax_with_head_mean(q, k, v, tile_bytes=two_images, onednn_min_scores=1 << 62)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('batch,heads,queries,tile_rows,threads', [
    (4, 3, 5, 5, 2), (4, 3, 5, 10, 2), (3, 3, 5, 15, 1), (4, 3, 7, 2, 2), (5, 3, 7, 3, 2), (4, 6, 7, 3, 4),
    (2, 3, 7, 1, 2), (3, 2, 9, 4, 3),
])
def test_tiles_cover_every_image_and_row_once_within_the_tile_size(monkeypatch, batch, heads, queries, tile_rows,
                                                                     threads):
    num_keys = 9
    monkeypatch.setattr(torch, 'get_num_threads', lambda: threads)
    q = torch.empty(batch, heads, queries, 8)
    covered = torch.zeros(batch, queries, dtype=torch.long)
    for images, rows in kernel.tiles(q, num_keys, tile_rows * heads * num_keys * 4):
        tile = covered[images, rows]
        assert tile.numel() <= max(tile_rows, queries) * (1 if tile_rows < queries else tile_rows // queries)
        covered[images, rows] += 1
    assert torch.equal(covered, torch.ones_like(covered))


def test_row_tiles_span_images_so_that_products_split_evenly_over_the_threads(monkeypatch):
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    tiles = list(kernel.tiles(torch.empty(4, 3, 7, 8), 9, 4 * 3 * 9 * 4))  # 4 rows of 3 heads per tile
    assert tiles[:2] == [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4))]  # 3 heads, 2 threads: 2 images
    assert len(tiles) == 2 * 4


def test_the_tile_size_given_is_the_one_the_tiles_are_cut_by(monkeypatch):
    seen = []

    def recording_tiles(q, num_keys, tile_bytes=kernel.TILE_BYTES):
        seen.append(tile_bytes)
        return kernel_tiles(q, num_keys, tile_bytes)

    kernel_tiles = kernel.tiles
    monkeypatch.setattr(kernel, 'tiles', recording_tiles)
    q, k, v = (torch.randn(2, 2, 9, 4) for _ in range(3))
    kernel.softmax_with_head_mean(q, k, v, tile_bytes=2 * 9 * 4 * 3, onednn_min_scores=1 << 62)
    assert seen == [2 * 9 * 4 * 3]
