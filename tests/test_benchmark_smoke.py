"""Smoke test of ``benchmarks/speed.py`` (issue 6): it runs at the smallest size and writes its table; no timing
assertion."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the benchmark runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATIOS = ('eval_time', 'eval_flops', 'sa_only_time', 'sa_only_flops', 'train_time', 'train_flops', 'train_memory')


def test_speed_benchmark_smoke_writes_table_and_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks.speed', '--smoke', '--device', 'cpu', '--out-dir', str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / 'speed_cpu_smoke.json') as file:
        result = json.load(file)
    for key in ('device', 'device_name', 'torch', 'timm', 'threads', 'dtype', 'timing', 'flop_counting',
                'memory_counting', 'targets', 'table'):
        assert result[key] not in (None, ''), key
    assert result['device'] == 'cpu' and result['threads'] >= 1
    (row,) = result['rows']
    assert (row['model'], row['img_size']) == ('deit_tiny_patch16_224', 224)
    for name in RATIOS:
        assert row['ratios'][name] > 0, name
    for name in ('timm_eval', 'dcal_eval', 'sa_only_eval', 'timm_train', 'dcal_train'):
        assert row['seconds'][name] > 0 and row['flops'][name] > 0, name
    assert row['seconds']['timm_eval_alone'] > 0
    assert set(row['timm_alone_rounds']['minor_page_faults_median']) == {'timm_eval_alone'}
    # Attention is counted on both sides: timm's fused attention is not free, and the SA-only mode is timm's forward.
    assert row['flops']['sa_only_eval'] == row['flops']['timm_eval']
    assert row['flops']['dcal_train'] > 2 * row['flops']['timm_train']
    assert row['peak_bytes']['dcal_train'] > row['peak_bytes']['timm_train'] > 0
    assert 0 < row['rollout_share'] < 1
    assert set(row['checks']) >= {'eval_time_le_1_10_flops', 'sa_only_time_le_1_02', 'train_memory_le_2_2'}
    assert set(row['eval_rounds']['minor_page_faults_median']) == {'timm_eval', 'dcal_eval', 'sa_only_eval'}
    assert row['model'].replace('_patch16_224', '') in proc.stdout
    with open(tmp_path / 'speed_cpu_smoke.md') as file:
        assert result['table'] in file.read()


def test_interleaved_timing_counts_the_page_faults_of_fresh_memory():
    # a fresh process where glibc maps every allocation over 64 KiB anew (and unmaps it on free), so each call's
    # 64 MiB tensor is faulted in again; a process with a grown heap may serve it from pages it already holds
    script = (
        'import json, torch\n'
        'from benchmarks.measure import time_interleaved\n'
        'times, summary = time_interleaved(dict(fresh=lambda: torch.ones(16 << 20), idle=lambda: None), '
        'repeats=3, warmup=1, sync=lambda: None)\n'
        'print(json.dumps(dict(calls=len(times["fresh"]), faults=summary["minor_page_faults_median"])))\n')
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['calls'] == 3
    assert result['faults']['fresh'] >= 0.9 * (64 << 20) / (2 << 20)  # at least one fault per page, huge (2 MB) or not
    assert result['faults']['idle'] < 10


def test_fused_cpu_attention_counts_the_flops_of_the_unfused_bmm():
    import torch
    import torch.nn.functional as F

    from benchmarks.measure import count_flops
    from dcal_plugin.core import attention_map_kernel as kernel

    def inputs():
        g = torch.Generator().manual_seed(0)
        return [torch.randn(2, 3, n, 8, generator=g, requires_grad=True) for n in (5, 9, 9)]

    def fused_step():
        q, k, v = inputs()
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    def manual_step():
        q, k, v = inputs()
        (((q / 8 ** 0.5) @ k.transpose(-2, -1)).softmax(-1) @ v).sum().backward()

    with torch.no_grad():
        q, k, v = inputs()
        fused = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
        manual = count_flops(lambda: ((q / 8 ** 0.5) @ k.transpose(-2, -1)).softmax(-1) @ v)
    assert fused == manual == 2 * (2 * 2 * 3 * 5 * 9 * 8)
    if kernel.onednn_linear() is not None:  # DCAL's CPU maps multiply through it: counted as the mm it is
        assert count_flops(lambda: kernel.onednn_linear()(q[0, 0], k[0, 0])) == 2 * 5 * 9 * 8
    # backward: the fused kernel recomputes QK^T (one bmm more than autograd's four)
    assert count_flops(fused_step) == count_flops(manual_step) + 2 * 2 * 3 * 5 * 9 * 8


@pytest.mark.parametrize('heads', [2, 3])
def test_tiled_attention_paths_match_one_tile(monkeypatch, heads):
    """The kernel's CPU tiles (of whole images or of query rows) compute the same output and map as one tile.

    With 3 heads on 2 threads a tile of query rows spans 2 images, and the odd third image a tile of its own.
    """
    import torch

    from dcal_plugin.core import attention_map_kernel as kernel

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, heads, n, 8, generator=g) for n in (11, 13, 13))
    by_tile = dict(head_by_head=False)
    want_out, want_map = kernel.softmax_with_head_mean(q, k, v, tile_bytes=1 << 62, **by_tile)
    assert torch.allclose(want_map.sum(-1), torch.ones(3, 11))
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    row_tile_images = {1} if heads == 2 else {2, 1}
    for tile_bytes, images_per_tile in ((heads * 22 * 13 * 4, {2, 1}),  # two whole images per tile
                                        (heads * 3 * 13 * 4, row_tile_images), (1, row_tile_images)):  # 3 rows; 1 row
        tiles = list(kernel.tiles(q, 13, tile_bytes))
        covered = torch.zeros(3, 11, dtype=torch.long)
        for images, rows in tiles:
            covered[images, rows] += 1
        assert covered.eq(1).all()
        assert {len(range(*images.indices(3))) for images, _ in tiles} == images_per_tile
        out, weights = kernel.softmax_with_head_mean(q, k, v, tile_bytes=tile_bytes, **by_tile)
        torch.testing.assert_close(out, want_out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(weights, want_map, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(kernel.softmax_with_head_mean(q, k, tile_bytes=tile_bytes, **by_tile)[1], want_map,
                                   rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(want_out, torch.nn.functional.scaled_dot_product_attention(q, k, v),
                               rtol=1e-5, atol=1e-6)


def test_round_ratio_range_pairs_the_calls_of_each_round():
    from benchmarks.report import round_ratio_range

    row = dict(seconds_all=dict(dcal_eval=[1.2, 3.0, 1.1], timm_eval=[1.0, 2.0, 1.0]))
    low, high = round_ratio_range(row, 'dcal_eval', 'timm_eval')
    assert (round(low, 6), round(high, 6)) == (1.1, 1.5)


def test_attention_variants_compute_the_same_dcal_outputs():
    """Every way of getting the maps in ``benchmarks/attention_variants.py`` gives the same logits and local queries."""
    import torch

    from benchmarks.attention_variants import run_variant, variants
    from benchmarks.workloads import build_pair
    from dcal_plugin.core import attention_map_kernel as kernel

    # tiles of 5 query rows at 64x64 (17 tokens); head by head where oneDNN is
    chosen = variants(tile_bytes=3 * 17 * 4 * 5)
    _, dcal = build_pair('deit_tiny_patch16_224', 64, torch.device('cpu'))
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = {name: run_variant(dcal.eval(), images, softmax) for name, softmax in chosen.items()}
    reference = outputs.pop('shared softmax, one tile')
    for name, out in outputs.items():
        torch.testing.assert_close(out.sa_logits, reference.sa_logits, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(out.glca_logits, reference.glca_logits, rtol=1e-4, atol=1e-5, msg=name)
        assert torch.equal(out.local_query_index, reference.local_query_index), name
    assert dcal.softmax_with_head_mean is kernel.softmax_with_head_mean  # restored


def test_attention_variants_compare_reports_every_variant():
    import time

    from benchmarks.attention_variants import VARIANTS, compare, table

    row = compare('deit_tiny_patch16_224', 64, batch=2, repeats=1, warmup=0, clock=time.perf_counter,
                  max_foreign_share=None)
    assert set(row['time_ratio']) == set(row['flop_ratio']) == set(VARIANTS)
    assert row['flop_ratio']['fused + recomputed map, tiles'] > row['flop_ratio']['shared softmax, tiles'] > 1
    # the same products, counted through oneDNN's op (the tiles' head mean is a bmm, head by head it is adds)
    assert row['flop_ratio']['shared softmax, head by head'] == pytest.approx(
        row['flop_ratio']['shared softmax, tiles'], rel=1e-3)
    assert all(name in table([row]) for name in VARIANTS)


def test_rollout_share_is_read_from_the_forwards_profiler_label():
    import time

    import torch

    from benchmarks.measure import labelled_share
    from benchmarks.workloads import build_workloads
    from dcal_plugin.core.dcal_model import ROLLOUT_LABEL

    work = build_workloads('deit_tiny_patch16_224', 64, batch=2, device=torch.device('cpu'))
    work.eval_mode()
    share = labelled_share(work.eval['dcal_eval'], ROLLOUT_LABEL, torch.device('cpu'), repeats=2, sync=lambda: None,
                           clock=time.perf_counter)
    assert 0 < share < 1
    # the SA-only forward runs no rollout: its share is unknown, not 0
    with pytest.raises(RuntimeError, match=ROLLOUT_LABEL):
        labelled_share(work.eval['sa_only_eval'], ROLLOUT_LABEL, torch.device('cpu'), repeats=1, sync=lambda: None)
