"""Several ``benchmarks.speed`` runs of two (or more) trees side by side: each ratio's median over runs and its spread.

    python -m benchmarks.compare_runs before='/tmp/bench_before/benchmarks/results/speed_cpu_*run*.json' \\
        after='/tmp/bench_after/benchmarks/results/speed_cpu_*run*.json' --out benchmarks/results/speed_before_after.md

Each ``LABEL=GLOB`` names one tree's result files (one per run). For every case (model, image
size) and every ratio DCAL ÷ timm in :data:`RATIOS`, the table gives per label the median over
runs and the range of the runs (min–max), so that a change is read against the runs' own spread.
"""
import argparse
import glob
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

RATIOS = {'eval_time': 'eval t', 'sa_only_time': 'SA-only t', 'train_time': 'train t', 'train_memory': 'train mem'}
Case = Tuple[str, int]


def read_runs(pattern: str) -> List[Dict[Case, Dict[str, float]]]:
    """The result files matching ``pattern``: per run, ``{(model, img_size): ratios}``."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f'no result file matches {pattern}')
    return [{(row['model'], row['img_size']): row['ratios'] for row in json.loads(Path(path).read_text())['rows']}
            for path in paths]


def summarise(runs: List[Dict[Case, Dict[str, float]]], case: Case, ratio: str) -> str:
    """``median (min–max)`` of ``ratio`` over the runs that have ``case``."""
    values = [run[case][ratio] for run in runs if case in run]
    return f'{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})'


def comparison_table(trees: Dict[str, List[Dict[Case, Dict[str, float]]]]) -> str:
    """Markdown: a row per case and ratio, a column per tree: median (min–max) over its runs."""
    cases = sorted({case for runs in trees.values() for run in runs for case in run})
    runs_per_tree = ', '.join(f'{label}: {len(runs)} runs' for label, runs in trees.items())
    lines = [f'DCAL ÷ timm, median over runs (min–max of the runs); {runs_per_tree}.', '',
             '| model | img | ratio | ' + ' | '.join(trees) + ' |', '|---|---|---|' + '---|' * len(trees)]
    for model, img_size in cases:
        for ratio, name in RATIOS.items():
            cells = [summarise(runs, (model, img_size), ratio) for runs in trees.values()]
            lines.append(f'| {model} | {img_size} | {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Read every ``LABEL=GLOB``, print the table and write it to ``--out`` when given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('trees', nargs='+', metavar='LABEL=GLOB', help="a tree's result files, one per run")
    parser.add_argument('--out', type=Path, help='markdown file to write')
    args = parser.parse_args(argv)
    trees = {}
    for spec in args.trees:
        label, sep, pattern = spec.partition('=')
        if not sep:
            raise SystemExit(f'expected LABEL=GLOB, got {spec!r}')
        trees[label] = read_runs(pattern)
    table = comparison_table(trees)
    print(table)
    if args.out:
        args.out.write_text(f'# `benchmarks.speed` runs compared\n\n{table}\n')
    return table


if __name__ == '__main__':
    main()
