"""Extra peak memory of the rollout's attention maps, measured on CPU through the code a GPU runs.

For an eval forward, a train forward and a train step (forward and backward; training with
activation checkpointing): the peak bytes of timm's ViT, of DCAL with the rollout, and of DCAL with random queries (the
same forward without maps); the maps' extra is the rollout's peak minus the random queries'.
The maps are computed as off CPU (``softmax_with_head_mean = None``: every map deferred, in
chunks of a GPU's size); on a tree before deferred maps (580be9a, ``--tag before``), as off CPU
there too: the kernel in one tile. Also the top-R overlap under bfloat16 autocast with float32's, random-init DeiT-S.

    python -m benchmarks.map_memory --batch 16 --tag after
"""
import argparse
import copy
import functools
import importlib.util
import json
import os
import sys
from typing import Dict, Optional, Sequence

import timm
import torch
import torch.nn.functional as F

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import measure  # noqa: E402
from dcal_plugin.core import DCALViT  # noqa: E402
from dcal_plugin.core import attention_map_kernel as kernel  # noqa: E402

CPU = torch.device('cpu')
TAGS = ('before', 'after')


def as_off_cpu(dcal: DCALViT) -> DCALViT:
    """``dcal`` computing its maps as it does off CPU: deferred in a GPU's chunks, or (a tree without deferred maps) in
    one tile."""
    if importlib.util.find_spec('dcal_plugin.core.deferred_map') is None:
        dcal.softmax_with_head_mean = functools.partial(kernel.softmax_with_head_mean, tile_bytes=1 << 62)
        return dcal
    from dcal_plugin.core import deferred_map
    deferred_map.CPU_CHUNK_BYTES = deferred_map.CHUNK_BYTES  # this process measures what a GPU allocates
    dcal.softmax_with_head_mean = None
    return dcal


def peaks(model_name: str, img_size: int, batch: int) -> Dict[str, int]:
    """Peak bytes of each measured call, by name: ``{eval,train forward,train}_{timm,rollout,random}``."""
    torch.manual_seed(0)
    vit = timm.create_model(model_name, num_classes=200, img_size=img_size)
    images = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    labels, partner = torch.arange(batch) % 200, torch.arange(1, batch + 1) % batch
    models = dict(timm=vit, **{selection: as_off_cpu(DCALViT(copy.deepcopy(vit), query_selection=selection))
                               for selection in ('rollout', 'random')})

    def evaluate(model):
        with torch.no_grad():
            model.eval()(images)

    def train(model, backward=True):
        model.train().set_grad_checkpointing(True)
        if model is vit:
            loss = F.cross_entropy(vit(images), labels)
        else:
            out = model(images, partner)
            loss = sum(F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits))
        if backward:
            loss.backward()
        model.zero_grad(set_to_none=True)

    result = {}
    for mode, step in (('eval', evaluate), ('train forward', functools.partial(train, backward=False)),
                       ('train', train)):
        for name, model in models.items():
            print(f'{mode} {name} ...', file=sys.stderr, flush=True)
            resident = functools.partial(measure.live_bytes, [*model.parameters(), images])
            result[f'{mode}_{name}'] = measure.peak_step_bytes(functools.partial(step, model), resident, CPU)
    return result


def top_r_overlap(img_size: int, batch: int) -> float:
    """Share of float32's local queries that bfloat16 autocast also selects, random-init DeiT-S."""
    torch.manual_seed(0)
    dcal = as_off_cpu(DCALViT.from_timm('deit_small_patch16_224', img_size=img_size)).eval()
    images = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dcal.softmax_with_head_mean = kernel.softmax_with_head_mean  # float32: CPU maps, as the tests' reference
        full = dcal(images).local_query_index
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = as_off_cpu(dcal)(images).local_query_index
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(half, full)) / full.numel()


def table(results: Dict[str, Dict]) -> str:
    """Markdown: one line per tag and mode, MB."""
    lines = ['| tree | mode | timm peak | DCAL peak | DCAL random-query peak | maps\' extra | extra / timm |',
             '|' + '---|' * 7]
    for tag, row in results.items():
        for mode in ('eval', 'train forward', 'train'):
            timm_peak, rollout, random = (row['peaks'][f'{mode}_{name}'] for name in ('timm', 'rollout', 'random'))
            lines.append(f'| {tag} | {mode} | {timm_peak / 2**20:.0f} MB | {rollout / 2**20:.0f} MB | '
                         f'{random / 2**20:.0f} MB | {(rollout - random) / 2**20:.0f} MB | '
                         f'{(rollout - random) / timm_peak:.1%} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='vit_base_patch16_224')
    parser.add_argument('--img-size', type=int, default=448)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--overlap-batch', type=int, default=4)
    parser.add_argument('--tag', choices=TAGS, default='after')
    parser.add_argument('--out-dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = parser.parse_args(argv)
    row = dict(measure.environment(CPU, None), model=args.model, img_size=args.img_size, batch=args.batch,
               peaks=peaks(args.model, args.img_size, args.batch),
               bf16_top_r_overlap=top_r_overlap(args.img_size, args.overlap_batch), overlap_batch=args.overlap_batch)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, f'map_memory_{args.tag}.json'), 'w') as file:
        json.dump(row, file, indent=1)
    results = {}
    for tag in TAGS:
        path = os.path.join(args.out_dir, f'map_memory_{tag}.json')
        if os.path.exists(path):
            with open(path) as file:
                results[tag] = json.load(file)
    overlaps = ', '.join(f"{tag} {row['bf16_top_r_overlap']:.2%}" for tag, row in results.items())
    text = (f"Peak bytes of one step on CPU ({row['device_name']}, torch {row['torch']}, {row['threads']} threads), "
            f"{args.model} at {args.img_size}, batch {args.batch}, float32; train: forward and backward with "
            "activation checkpointing (train forward: its forward alone). Maps computed as off CPU "
            f"(benchmarks/map_memory.py).\n\n{table(results)}\n\n"
            f"Top-R overlap of bfloat16 autocast with float32, random-init DeiT-S at {args.img_size}, "
            f"batch {args.overlap_batch}: {overlaps}.\n")
    with open(os.path.join(args.out_dir, 'map_memory.md'), 'w') as file:
        file.write(text)
    print(text)


if __name__ == '__main__':
    main()
