"""The GPU check's parts that run on CPU (issue 23): sections with time limits, results after every case, checks, exit
code."""
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.slow  # the GPU check script runs in subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_check(tmp_path, *args):
    """``python -m benchmarks.gpu_check --device cpu --smoke ARGS`` with ``$OUT`` = ``tmp_path``, and its report."""
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.gpu_check', '--device', 'cpu', '--smoke', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OUT=str(tmp_path)))
    with open(tmp_path / 'gpu_check_cpu_smoke.json') as file:
        return proc, json.load(file)


def test_the_gpu_check_runs_its_smoke_section_on_cpu_into_out(tmp_path):
    proc, result = gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'GPU check passed: smoke_bfloat16' == result['summary']
    (section,) = result['sections']
    (row,) = section['rows']
    assert section['status'] == 'passed' and row['dtype'] == 'bfloat16' and all(row['checks'].values())
    assert row['sdpa_kernels']['flash'] > 0 and row['sdpa_kernels']['math'] == 0  # CPU's fused kernel
    assert row['loss_checkpointing_True'] == pytest.approx(row['loss_checkpointing_False'], rel=1e-5)
    assert row['peak_mib_checkpointing_True'] > 0 and 0.9 <= row['top_r_overlap_with_float32'] <= 1
    assert 'smoke_bfloat16: passed' in (tmp_path / 'gpu_check_cpu_smoke.md').read_text()


def test_a_section_over_its_time_limit_is_recorded_and_the_check_fails(tmp_path):
    start = time.perf_counter()
    proc, result = gpu_check(tmp_path, '--section-timeout', '0.5')
    assert time.perf_counter() - start < 60
    assert proc.returncode == 1
    assert result['sections'][0]['status'] == 'timed out after 0.5 s'
    assert proc.stdout.strip().splitlines()[-1] == 'GPU check FAILED: smoke_bfloat16: timed out after 0.5 s'


def test_the_smoke_check_fails_when_attention_falls_back_to_the_math_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks.gpu_check import TINY_SMOKE_CASE, smoke

    with sdpa_kernel(SDPBackend.MATH):
        row = smoke(torch.device('cpu'), torch.bfloat16, *TINY_SMOKE_CASE)
    assert row['sdpa_kernels']['math'] > 0 and row['sdpa_kernels']['flash'] == 0
    assert row['checks'] == dict(gradients_finite=True, eval_logits_finite=True, top_r_overlap_ge_90pct=True,
                                 fused_attention_ran=False)


def test_the_summary_names_every_failed_check_and_lists_missed_speed_targets():
    from benchmarks.gpu_check import summary

    sections = [dict(section='smoke_float16', status='failed', checks_failed=['smoke_float16: gradients_finite']),
                dict(section='speed_deit_small_448', status='passed', checks_failed=[],
                     targets_missed=['speed_deit_small_448: sa_only_time_le_1_02']),
                dict(section='speed_vit_base_448', status='crashed (exit 1)', checks_failed=[])]
    assert summary(sections) == ('GPU check FAILED: smoke_float16: gradients_finite; speed_vit_base_448: crashed '
                                 '(exit 1) (speed targets missed: speed_deit_small_448: sa_only_time_le_1_02)')
    assert summary(sections[1:2]).startswith('GPU check passed: speed_deit_small_448 (speed targets missed')


def test_the_speed_tables_are_written_after_every_case(tmp_path, monkeypatch):
    from benchmarks import speed

    measure_case = speed.measure_case

    def second_case_crashes(model_name, img_size, *args):
        if img_size == 48:
            raise RuntimeError('CUDA error: the second case crashed')
        return measure_case(model_name, img_size, *args)

    monkeypatch.setattr(speed, 'measure_case', second_case_crashes)
    with pytest.raises(RuntimeError, match='second case crashed'):
        speed.main(['--device', 'cpu', '--models', 'deit_tiny_patch16_224:32,deit_tiny_patch16_224:48', '--batch', '2',
                    '--repeats', '1', '--train-repeats', '1', '--warmup', '0', '--max-foreign-share', '1',
                    '--out-dir', str(tmp_path)])
    with open(tmp_path / 'speed_cpu.json') as file:
        (row,) = json.load(file)['rows']
    assert (row['model'], row['img_size']) == ('deit_tiny_patch16_224', 32)
    assert '| deit_tiny | 32 |' in (tmp_path / 'speed_cpu.md').read_text()


def test_the_profiled_share_counts_each_labelled_range_once(monkeypatch):
    """On CUDA the profiler records a range twice: on the CPU and as its gpu_user_annotation twin."""
    import torch.profiler

    from benchmarks.measure import labelled_share

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    events = [SimpleNamespace(name='rollout', device_type=cpu, cpu_time_total=300_000, device_time_total=100_000),
              SimpleNamespace(name='rollout', device_type=cuda, cpu_time_total=0, device_time_total=100_000),
              SimpleNamespace(name='aten::mm', device_type=cpu, cpu_time_total=500_000, device_time_total=400_000)]

    class Profile:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return events

    clock = iter(range(100)).__next__  # every call takes 1 s
    monkeypatch.setattr(torch.profiler, 'profile', Profile)
    share = labelled_share(lambda: None, 'rollout', torch.device('cuda'), repeats=1, sync=lambda: None, clock=clock)
    assert share == pytest.approx(0.1)
