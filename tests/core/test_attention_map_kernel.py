"""The CPU-aware kernel behind the rollout's maps against an explicit loop; its CPU path chosen by measurement."""

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
def test_float32_cpu_maps_go_head_by_head_when_asked_or_measured_faster(monkeypatch):
    q, k, _ = qkv(nq=5, nk=9)
    assert taken_path(monkeypatch, q, k, head_by_head=True) == ['_by_head']
    assert taken_path(monkeypatch, q, k, head_by_head=False) == ['_by_tile']
    for faster in (True, False):
        monkeypatch.setattr(kernel, 'head_by_head_is_faster', lambda *args, faster=faster: faster)
        assert taken_path(monkeypatch, q, k) == (['_by_head'] if faster else ['_by_tile'])
    assert taken_path(monkeypatch, q.double(), k.double(), head_by_head=True) == ['_by_tile']
    with torch.backends.mkldnn.flags(enabled=False):
        assert taken_path(monkeypatch, q, k, head_by_head=True) == ['_by_tile']
    monkeypatch.setattr(kernel, 'onednn_linear', lambda: None)
    assert taken_path(monkeypatch, q, k, head_by_head=True) == ['_by_tile']


@needs_onednn
@pytest.mark.parametrize('slower', ['_by_head', '_by_tile'])
def test_the_cpu_path_is_the_one_measured_faster_here_once_per_shape_and_thread_count(monkeypatch, slower):
    """Each path is timed on the inputs' first images (as many as threads); the faster is kept per shape."""
    monkeypatch.setattr(kernel, '_head_by_head_faster', {})
    timed_images, clock = [], [0.0]

    def timed(name, real):
        def path(q, k, v, *args):
            timed_images.append((name, q.shape[0]))
            clock[0] += 2.0 if name == slower else 1.0  # seconds on a fake clock
            return real(q, k, v, *args)
        return path

    for name in ('_by_head', '_by_tile'):
        monkeypatch.setattr(kernel, name, timed(name, getattr(kernel, name)))
    monkeypatch.setattr(kernel.time, 'perf_counter', lambda: clock[0])
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    q, k, v = qkv(nq=5, nk=9)
    out, weights = softmax_with_head_mean(q, k, v)
    faster = '_by_tile' if slower == '_by_head' else '_by_head'
    runs = kernel.CALIBRATION_RUNS
    assert timed_images == [('_by_head', 2)] * runs + [('_by_tile', 2)] * runs + [(faster, 2)]
    want_out, want_probs = explicit_attention(q, k, v)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    timed_images.clear()
    softmax_with_head_mean(*qkv(nq=5, nk=9, seed=1))  # the same shape: measured already
    assert timed_images == [(faster, 2)]
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)  # another thread count: measured again, on one image
    softmax_with_head_mean(q, k, v)
    assert timed_images[1:] == [('_by_head', 1)] * runs + [('_by_tile', 1)] * runs + [(faster, 2)]


@needs_onednn
@pytest.mark.parametrize('tile_rows', [5, 2])  # whole images; blocks of 2 query rows (the last of 1)
def test_head_by_head_path_matches_explicit_formula(monkeypatch, tile_rows):
    q, k, v = qkv(nq=5, nk=9)
    want_out, want_probs = explicit_attention(q, k, v)
    thresholds = dict(head_by_head=True, tile_bytes=tile_rows * 9 * 4)
    assert taken_path(monkeypatch, q, k, **thresholds) == ['_by_head']
    out, weights = softmax_with_head_mean(q, k, v, **thresholds)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    none, map_only = softmax_with_head_mean(q, k, **thresholds)
    assert none is None
    torch.testing.assert_close(map_only, want_probs.mean(1), rtol=1e-5, atol=1e-6)
    assert out.transpose(1, 2).is_contiguous()  # merging the heads is a view


@pytest.mark.parametrize('head_by_head', [True, False])  # head by head (where oneDNN is), one tile
def test_attention_dropout_drops_from_the_output_not_from_the_map(monkeypatch, head_by_head):
    """Output = (P ⊙ M / (1 - p)) v with the mask M that dropout drew; the map is the mean of P itself."""
    q, k, v = qkv()
    dropped, real_dropout = [], torch.nn.functional.dropout

    def recording(probabilities, p, **kwargs):
        dropped.append(real_dropout(probabilities, p=p, **kwargs))
        return dropped[-1]

    monkeypatch.setattr(torch.nn.functional, 'dropout', recording)
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = softmax_with_head_mean(q, k, v, dropout_p=0.5, head_by_head=head_by_head)
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
    out, weights = softmax_with_head_mean(q, k, v, head_by_head=True)
    assert out.dtype == weights.dtype == torch.float64
    torch.testing.assert_close(out, want_out.double(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, want_probs.double().mean(1), rtol=1e-12, atol=1e-12)


def test_tiles_of_two_images_with_a_last_tile_of_one(monkeypatch):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 3, n, 8, generator=g) for n in (5, 9, 9))
    two_images = 2 * 3 * 5 * 9 * 4  # two images of 3 heads x 5 rows x 9 keys
    assert list(kernel.tiles(q, 9, two_images)) == [(slice(0, 2), slice(None)), (slice(2, 4), slice(None))]
    want_out, want_probs = explicit_attention(q, k, v)
    out, weights = softmax_with_head_mean(q, k, v, tile_bytes=two_images, head_by_head=False)
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
    kernel.softmax_with_head_mean(q, k, v, tile_bytes=2 * 9 * 4 * 3, head_by_head=False)
    assert seen == [2 * 9 * 4 * 3]
