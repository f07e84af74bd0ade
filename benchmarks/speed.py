"""DCAL against a plain timm ViT of the same size and resolution, in one process, as ratios (issue 6).

For every case (model, image size, batch) it builds timm's model and a ``DCALViT`` around a copy
of it (same weights) and measures, DCAL ÷ timm:

- eval forward (SA + GLCA + rollout) vs timm's eval forward, both under ``torch.no_grad``;
- the SA-only inference mode (``sa_only_inference=True``) vs timm's eval forward;
- one train step (SA + GLCA + PWCA forward, uncertainty-weighted cross-entropy, backward, AdamW
  step) vs timm's train step (forward, cross-entropy, backward, AdamW step);
- peak memory of the train step (see ``measure.peak_step_bytes``);
- beside every time ratio, the FLOP ratio of the same two calls (``measure.count_flops``);
- the share of DCAL's eval forward spent in the class-token rollout and the top-R selection,
  profiled inside real eval forwards by the forward's ``torch.profiler`` label (``ROLLOUT_LABEL``;
  a forward without it is an error, not a share of 0);
- timm's eval forward on its own, timed before the case's DCAL first runs: under glibc's default
  malloc, timm's later forwards take their large temporaries from the heap that DCAL's forwards
  grew, and this shows what they cost without it (time and page faults; in the first case only
  is the heap timm's alone, later cases inherit what the earlier ones grew).

The calls compared are built in ``workloads.py``, measured with ``measure.py`` and reported
(ratios, targets, tables) by ``report.py``. Times are medians of interleaved repeats after
warm-up. One table is printed and written, with the device, torch version and thread count, to
``<out-dir>/speed_<device><tag>.json`` and ``.md``, rewritten after every case.

    python -m benchmarks.speed                 # the full table under glibc's default malloc
    make bench   # the same with glibc keeping freed memory (MALLOC_*_ settings in the Makefile): no page faults
    python -m benchmarks.speed --smoke --out-dir /tmp/b   # CI: DeiT-Tiny@224, batch 2, 1 repeat
    python -m benchmarks.speed --device cuda --dtype bfloat16   # GPU rows (benchmarks/gpu_check.py runs them)
"""
import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, Optional, Sequence

import torch

if __package__ in (None, ''):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import measure, report  # noqa: E402
from benchmarks.workloads import Workloads, build_workloads  # noqa: E402
from dcal_plugin.core.dcal_model import ROLLOUT_LABEL  # noqa: E402

CPU_CASES = (('deit_tiny_patch16_224', 224), ('deit_tiny_patch16_224', 448),
             ('deit_small_patch16_224', 224), ('deit_small_patch16_224', 448),
             ('vit_small_patch14_reg4_dinov2', 392))  # beyond the paper: its config's size, the 28 x 28 patch grid
GPU_CASES = CPU_CASES + (('vit_base_patch16_224', 448), ('vit_base_r50_s16_384', 448))
SMOKE_CASES = (('deit_tiny_patch16_224', 224),)


def measure_case(model_name: str, img_size: int, batch: int, device: torch.device, repeats: int, train_repeats: int,
                 warmup: int, autocast_dtype: Optional[torch.dtype], clock: Callable[[], float],
                 max_foreign_share: Optional[float]) -> Dict:
    """Times, FLOPs, peak memory, rollout share, ratios and checks of one (model, size, batch) case."""
    work = build_workloads(model_name, img_size, batch, device, autocast_dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    row = dict(model=model_name, img_size=img_size, batch=batch, tokens=work.tokens, local_queries=work.local_queries)
    with measure.CpuLoad() as load:
        work.eval_mode()
        # timm before this case's DCAL has run (the heap holds only what earlier cases left)
        alone, row['timm_alone_rounds'] = measure.time_interleaved(
            dict(timm_eval_alone=work.eval['timm_eval']), repeats, warmup, sync, clock, max_foreign_share, 4 * repeats)
        times, row['eval_rounds'] = measure.time_interleaved(
            work.eval, repeats, warmup, sync, clock, max_foreign_share, 4 * repeats)
        row['rollout_share'] = measure.labelled_share(
            work.eval['dcal_eval'], ROLLOUT_LABEL, device, repeats, sync, clock, max_foreign_share)
        work.train_mode()
        train_times, row['train_rounds'] = measure.time_interleaved(
            work.train, train_repeats, warmup, sync, clock, max_foreign_share, 3 * train_repeats)
        times.update(train_times, **alone)
    kept = row['eval_rounds']['foreign_share_of_kept'] + row['train_rounds']['foreign_share_of_kept']
    row['foreign_cpu_share'] = sum(kept) / len(kept)  # during the timed rounds that were kept
    row['foreign_cpu_share_whole_case'] = load.share
    row['seconds'] = {name: measure.median(values) for name, values in times.items()}
    row['seconds_all'] = {name: [round(v, 6) for v in values] for name, values in times.items()}
    row['flops'] = count_flops(work)
    if device.type == 'cpu':  # torch's CPU default (fused attention = 0 FLOPs): how the ceilings were counted
        row['flops_cpu_sdpa_uncounted'] = count_flops(work, ('timm_eval', 'reference_eval', 'timm_train', 'dcal_train'),
                                                      count_cpu_sdpa=False)
    row['peak_bytes'] = {name: measure.peak_step_bytes(step, work.resident[name], device)
                         for name, step in work.train.items()}
    row['ratios'] = report.ratios(row)
    row['checks'] = report.check(row)
    return row


def count_flops(work: Workloads, names: Optional[Sequence[str]] = None, count_cpu_sdpa: bool = True) -> Dict[str, int]:
    """FLOPs of one call of each workload (all, or ``names``), each counted in its own mode (eval or train)."""
    work.eval_mode()
    calls = dict(work.eval, reference_eval=work.reference_eval)
    flops = {name: measure.count_flops(fn, count_cpu_sdpa) for name, fn in calls.items()
             if names is None or name in names}
    work.train_mode()
    flops.update({name: measure.count_flops(fn, count_cpu_sdpa) for name, fn in work.train.items()
                  if names is None or name in names})
    return flops


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Measure every case, print the tables, write ``speed_<device><tag>.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default=None,
                        help='float32, or autocast to bfloat16/float16 (default: bfloat16 on CUDA, float32 elsewhere)')
    parser.add_argument('--batch', type=int, default=8, help='batch at 224 (and at 448 unless --batch-448)')
    parser.add_argument('--batch-448', type=int, default=None, help='batch at 448 (default: --batch)')
    parser.add_argument('--repeats', type=int, default=7, help='timed eval forwards per model')
    parser.add_argument('--train-repeats', type=int, default=5, help='timed train steps per model')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--clock', choices=('wall', 'thread'), default='wall',
                        help='wall: perf_counter; thread: CPU time of the main thread '
                             '(contention-robust with --threads 1)')
    parser.add_argument('--tag', default='', help='suffix of the result file names')
    parser.add_argument('--max-foreign-share', type=float, default=0.1,
                        help='re-measure a round during which other processes took more of the CPU than this')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--models', default=None,
                        help='comma-separated model:size pairs, e.g. deit_tiny_patch16_224:448')
    parser.add_argument('--smoke', action='store_true', help='CI: DeiT-Tiny@224, batch 2, no warm-up, 1 repeat')
    parser.add_argument('--out-dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = args.dtype or ('bfloat16' if device.type == 'cuda' else 'float32')
    autocast_dtype = None if dtype == 'float32' else getattr(torch, dtype)
    cases = GPU_CASES if device.type == 'cuda' else CPU_CASES
    if args.models:
        cases = [(name, int(size)) for name, size in (item.split(':') for item in args.models.split(','))]
    if args.smoke:
        cases, args.batch, args.batch_448, args.repeats, args.train_repeats, args.warmup = SMOKE_CASES, 2, 2, 1, 1, 0
        args.max_foreign_share = None
    if args.clock == 'thread' and torch.get_num_threads() != 1:
        parser.error('--clock thread measures the main thread only: use it with --threads 1')
    clock = time.perf_counter if args.clock == 'wall' else time.thread_time
    result = measure.environment(device, autocast_dtype)
    result.update(
        smoke=args.smoke, timing=dict(
            statistic='median', repeats=args.repeats, train_repeats=args.train_repeats, warmup=args.warmup,
            clock=('wall (time.perf_counter)' if args.clock == 'wall'
                   else 'CPU time of the main thread (time.thread_time)'),
            order='interleaved: timm, DCAL, timm, DCAL, ...'),
        flop_counting=measure.ATTENTION_COUNTING, memory_counting=measure.peak_step_bytes.__doc__.split('\n\n')[1],
        targets=dict(report.TARGETS, flop_ceilings={f'{m}@{s}': v for (m, s), v in report.FLOP_CEILINGS.items()}),
        rows=[])
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f'speed_{device.type}' + ('' if dtype == 'float32' else f'_{dtype}')
                        + ('_smoke' if args.smoke else '') + args.tag)
    for model_name, img_size in cases:
        batch = args.batch_448 if img_size >= 448 and args.batch_448 else args.batch
        print(f'measuring {model_name} @ {img_size}, batch {batch} ...', file=sys.stderr, flush=True)
        result['rows'].append(measure_case(
            model_name, img_size, batch, device, args.repeats, args.train_repeats, args.warmup, autocast_dtype, clock,
            args.max_foreign_share))
        write(result, stem)  # after every case: a later crash or kill keeps the rows measured
    print(result['table'] + '\n\n' + result['flop_table'])
    return result


def write(result: Dict, stem: str) -> None:
    """Add the tables of ``result['rows']`` to ``result``; write it to ``<stem>.json`` and the tables to
    ``<stem>.md``."""
    result['table'] = report.table(result['rows'])
    result['flop_table'] = report.flop_table(result['rows'])
    with open(stem + '.json', 'w') as file:
        json.dump(result, file, indent=1)
    with open(stem + '.md', 'w') as file:
        file.write(report.header(result) + '\n\n' + result['table'] + '\n\n' + result['flop_table'] + '\n')


if __name__ == '__main__':
    main()
