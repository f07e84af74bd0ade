"""DCAL's eval forward with each way of getting the attention maps, against timm's eval forward.

The exact method needs every SA block's head-averaged map (for the rollout). The variants:

- ``shared softmax, head by head``: one softmax per image and head gives both the output ``P·V``
  and the head mean of ``P``, both products through oneDNN (``attention_map_kernel.onednn_linear``);
- ``shared softmax, tiles`` / ``one tile``: the same softmax over tiles of ``TILE_BYTES`` or over
  the whole ``[B, H, N, N]`` tensor at once, the products by ``torch.bmm`` (MKL); without
  autograd on CPU the model takes whichever of ``head by head`` and ``tiles`` it measured faster
  (``attention_map_kernel.head_by_head_is_faster``);
- ``fused + recomputed map, head by head`` / ``tiles`` / ``one tile``: fused SDPA for the
  output, and the map recomputed beside it without gradient (the issue's reference design; more
  FLOPs);
- ``fused + map from log-sum-exp, tiles``: torch's CPU flash kernel, which also returns each
  row's log-sum-exp, for the output; the map as ``exp(q kᵀ/√D - lse)`` (one exp pass instead of a
  softmax; the ``q kᵀ`` product is still recomputed).

Each variant is a function with the signature of ``softmax_with_head_mean``, set on the model as
its ``softmax_with_head_mean`` attribute for the call; nothing global changes.

    python -m benchmarks.attention_variants --models deit_tiny_patch16_224:448 --batch 8
"""
import argparse
import functools
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import measure  # noqa: E402
from benchmarks.workloads import build_pair  # noqa: E402
from dcal_plugin.core import attention_map_kernel as kernel  # noqa: E402

ONE_TILE = 1 << 62


def fused_with_recomputed_map(q, k, v=None, dropout_p=0.0, **thresholds):
    """The reference design: fused attention for the output, the map recomputed beside it (by the kernel)."""
    weights = kernel.softmax_with_head_mean(q, k, **thresholds)[1]
    return None if v is None else F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), weights


def fused_with_map_from_logsumexp(q, k, v=None, dropout_p=0.0):
    """Flash attention's output and log-sum-exp; the head-averaged map rebuilt tile by tile from them."""
    out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, k if v is None else v)[:2]
    batch, heads, queries, _ = q.shape
    scaled = kernel.scaled_contiguous_queries(q)
    keys_t = k.contiguous().transpose(-2, -1)
    weights = q.new_empty(batch, queries, k.shape[2])
    head_mean = q.new_full((batch, 1, heads), 1.0 / heads)
    for images, rows in kernel.tiles(scaled, k.shape[2]):
        probabilities = torch.matmul(scaled[images, :, rows], keys_t[images])
        probabilities.sub_(logsumexp[images, :, rows].unsqueeze(-1)).exp_()
        kernel.write_head_mean(probabilities, head_mean[images], weights[images, rows])
    return None if v is None else out, weights


def variants(tile_bytes: int = kernel.TILE_BYTES) -> Dict:
    """name -> a ``softmax_with_head_mean``-like function, its CPU path and tile size given as arguments."""
    paths = {'head by head': dict(tile_bytes=tile_bytes, head_by_head=True),
             'tiles': dict(tile_bytes=tile_bytes, head_by_head=False),
             'one tile': dict(tile_bytes=ONE_TILE, head_by_head=False)}
    designs = {'shared softmax': kernel.softmax_with_head_mean, 'fused + recomputed map': fused_with_recomputed_map}
    chosen = {f'{design}, {path}': functools.partial(softmax, **thresholds)
              for design, softmax in designs.items() for path, thresholds in paths.items()}
    return dict(chosen, **{'fused + map from log-sum-exp, tiles': fused_with_map_from_logsumexp})


VARIANTS = tuple(variants())


def run_variant(dcal: torch.nn.Module, images: torch.Tensor, softmax) -> object:
    """DCAL's eval forward on ``images`` with its maps (and the rollout blocks' outputs) from ``softmax``."""
    default = dcal.softmax_with_head_mean
    dcal.softmax_with_head_mean = softmax
    try:
        with torch.no_grad():
            return dcal(images)
    finally:
        dcal.softmax_with_head_mean = default


def compare(model_name: str, img_size: int, batch: int, repeats: int, warmup: int, clock,
            max_foreign_share: Optional[float]) -> Dict:
    vit, dcal = build_pair(model_name, img_size, torch.device('cpu'))
    vit.eval(), dcal.eval()
    images = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))

    def timm_eval():
        with torch.no_grad():
            return vit(images)

    fns = dict(timm=timm_eval, **{name: functools.partial(run_variant, dcal, images, softmax)
                                  for name, softmax in variants().items()})
    times, rounds = measure.time_interleaved(fns, repeats, warmup, lambda: None, clock, max_foreign_share, 4 * repeats)
    flops = {name: measure.count_flops(fn) for name, fn in fns.items()}
    seconds = {name: measure.median(values) for name, values in times.items()}
    kept = rounds['foreign_share_of_kept']
    return dict(model=model_name, img_size=img_size, batch=batch, foreign_cpu_share=sum(kept) / len(kept),
                rounds=rounds, tile_bytes=kernel.TILE_BYTES,
                seconds=seconds, flops=flops,
                time_ratio={n: seconds[n] / seconds['timm'] for n in VARIANTS},
                flop_ratio={n: flops[n] / flops['timm'] for n in VARIANTS})


def table(rows: Sequence[Dict]) -> str:
    lines = ['| model | img | B | variant | eval t | eval F | t/F | DCAL ms | timm ms | load |', '|' + '---|' * 10]
    for row in rows:
        for name in VARIANTS:
            t, f = row['time_ratio'][name], row['flop_ratio'][name]
            lines.append(f"| {row['model'].replace('_patch16_224', '')} | {row['img_size']} | {row['batch']} | "
                         f"{name} | {t:.2f} | {f:.2f} | {t / f:.2f} | {row['seconds'][name] * 1e3:.0f} | "
                         f"{row['seconds']['timm'] * 1e3:.0f} | {row['foreign_cpu_share']:.0%} |")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='deit_tiny_patch16_224:224,deit_tiny_patch16_224:448,'
                                            'deit_small_patch16_224:224,deit_small_patch16_224:448')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--clock', choices=('wall', 'thread'), default='wall')
    parser.add_argument('--out-dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
    parser.add_argument('--tag', default='')
    parser.add_argument('--max-foreign-share', type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == 'wall' else time.thread_time
    rows = []
    for item in args.models.split(','):
        name, size = item.split(':')
        print(f'measuring {name} @ {size}, batch {args.batch} ...', file=sys.stderr, flush=True)
        rows.append(compare(name, int(size), args.batch, args.repeats, args.warmup, clock, args.max_foreign_share))
    result = dict(measure.environment(torch.device('cpu'), None), clock=args.clock, repeats=args.repeats, rows=rows,
                  table=table(rows))
    print(result['table'])
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, 'attention_variants_cpu' + args.tag)
    with open(stem + '.json', 'w') as file:
        json.dump(result, file, indent=1)
    with open(stem + '.md', 'w') as file:
        file.write(f"DCAL eval forward ÷ timm eval forward, one variant of the attention maps per line; "
                   f"{result['threads']} thread(s), clock {args.clock}, medians of {args.repeats} interleaved "
                   f"repeats; torch {result['torch']}.\n\n{result['table']}\n")


if __name__ == '__main__':
    main()
