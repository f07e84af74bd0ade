"""The GPU check of issue 15, one script: CUDA smoke tests of the three branches, then the GPU benchmark rows.

Smoke test, for bfloat16 and float16 autocast: a DCAL DeiT-Small at 224 trains one step (SA, GLCA
and PWCA; every gradient finite) with and without activation checkpointing (same loss; peak memory
of each), and evaluates (logits finite; GLCA's top-R overlap with float32). Then
``benchmarks.speed`` on DeiT-Small and ViT-B/16 at 448 in bfloat16. Writes
``<out-dir>/gpu_check.{json,md}`` and the speed tables beside them; about 5 minutes on one GPU.

    python -m benchmarks.gpu_check                        # on a GPU machine
    python -m benchmarks.gpu_check --device cpu --smoke   # the smoke part on CPU (tests), bfloat16 only
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import timm
import torch
import torch.nn.functional as F

if __package__ in (None, ''):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import measure, speed  # noqa: E402
from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss  # noqa: E402

BENCHMARK_MODELS = 'deit_small_patch16_224:448,vit_base_patch16_224:448'


def smoke(device: torch.device, dtype: torch.dtype, model_name: str, img_size: int, batch: int) -> Dict:
    """One train step with and without checkpointing and one eval forward under ``dtype`` autocast."""
    torch.manual_seed(0)
    dcal = DCALViT(timm.create_model(model_name, num_classes=10, img_size=img_size)).to(device)
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    labels, partner = torch.arange(batch, device=device) % 10, torch.arange(1, batch + 1, device=device) % batch
    row = dict(model=model_name, img_size=img_size, batch=batch, dtype=str(dtype).replace('torch.', ''))
    for checkpointing in (False, True):
        dcal.train().set_grad_checkpointing(checkpointing)
        dcal.zero_grad(set_to_none=True)

        def step():
            with torch.autocast(device.type, dtype=dtype):
                out = dcal(images, partner)
                losses = [F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)]
            loss = UncertaintyWeightedLoss().to(device)(losses)
            loss.backward()
            row[f'loss_checkpointing_{checkpointing}'] = loss.item()

        row[f'peak_mib_checkpointing_{checkpointing}'] = measure.peak_step_bytes(step, lambda: 0, device) / 2 ** 20
        row[f'gradients_finite_checkpointing_{checkpointing}'] = all(
            bool(torch.isfinite(p.grad).all()) for p in dcal.parameters() if p.grad is not None)
    dcal.eval()
    with torch.no_grad():
        full = dcal(images)
        with torch.autocast(device.type, dtype=dtype):
            half = dcal(images)
    row['eval_logits_finite'] = bool(torch.isfinite(half.sa_logits).all() and torch.isfinite(half.glca_logits).all())
    row['top_r_overlap_with_float32'] = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(
        full.local_query_index, half.local_query_index)) / full.local_query_index.numel()
    row['glca_logit_difference'] = float((half.glca_logits.float() - full.glca_logits).abs().max())
    row['passed'] = (row['eval_logits_finite'] and row['gradients_finite_checkpointing_False']
                     and row['gradients_finite_checkpointing_True'] and row['top_r_overlap_with_float32'] >= 0.9)
    return row


def table(rows: Sequence[Dict]) -> str:
    """Markdown table of the smoke rows."""
    lines = ['| model | img | B | dtype | loss / with checkpointing | peak MiB / with checkpointing | top-R overlap '
             '| GLCA logit diff | passed |', '|' + '---|' * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['img_size']} | {r['batch']} | {r['dtype']} | "
                     f"{r['loss_checkpointing_False']:.4f} / {r['loss_checkpointing_True']:.4f} | "
                     f"{r['peak_mib_checkpointing_False']:.0f} / {r['peak_mib_checkpointing_True']:.0f} | "
                     f"{r['top_r_overlap_with_float32']:.1%} | {r['glca_logit_difference']:.2e} | {r['passed']} |")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    """Run the smoke tests (and, unless ``--smoke``, the benchmark rows); write ``gpu_check.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--smoke', action='store_true', help='a tiny model, bfloat16 only, no benchmark rows')
    parser.add_argument('--out-dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('no CUDA device: run on a GPU machine, or use --device cpu --smoke')
    dtypes = (torch.bfloat16,) if args.smoke else (torch.bfloat16, torch.float16)
    model_name, img_size, batch = ('deit_tiny_patch16_224', 64, 4) if args.smoke else ('deit_small_patch16_224', 224, 16)
    rows = [smoke(device, dtype, model_name, img_size, batch) for dtype in dtypes]
    print(table(rows))
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f'gpu_check_{device.type}' + ('_smoke' if args.smoke else ''))
    with open(stem + '.json', 'w') as file:
        json.dump(dict(measure.environment(device, None), rows=rows), file, indent=1)
    with open(stem + '.md', 'w') as file:
        file.write(f'DCAL smoke test on {device.type}, autocast per row; torch {torch.__version__}.\n\n{table(rows)}\n')
    if not args.smoke:
        speed.main(['--device', 'cuda', '--dtype', 'bfloat16', '--models', BENCHMARK_MODELS, '--out-dir', args.out_dir])
    return rows


if __name__ == '__main__':
    main()
