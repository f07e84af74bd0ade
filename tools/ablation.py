"""Ablation of DCAL's branches on the built-in digits data (issue 7): SA only, SA + GLCA, SA + PWCA, full DCAL.

Each variant trains with the same budget and seeds: FGVC through the MMPretrain demo config on
digits-CUB (top-1 of SA, GLCA and fused, from mmengine's validation after every epoch), Re-ID
through the torchreid engine on digits-VeRi-776 (mAP and Rank-1, tested every few epochs).
Writes ``<out>/ablation.md`` (mean ± std over seeds), ``<out>/ablation.png`` (learning curves)
and ``<out>/ablation.json`` (every run's curve). Numbers on this data are not paper numbers.

    python tools/ablation.py                       # make ablation: 3 seeds, under an hour on 2 CPU cores
    python tools/ablation.py --scale 4 --seeds 0 1 2 3 4   # more data and epochs (GPU)
"""
import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
FGVC_CONFIG = ROOT / 'configs' / 'dcal_deit-tiny_digits-cub.py'
REID_CONFIG = ROOT / 'configs' / 'reid' / 'dcal_deit-tiny_digits-veri776.yaml'
VARIANTS = {
    'SA only': dict(use_glca=False, use_pwca=False),
    'SA + GLCA': dict(use_glca=True, use_pwca=False),
    'SA + PWCA': dict(use_glca=False, use_pwca=True),
    'DCAL (SA + GLCA + PWCA)': dict(use_glca=True, use_pwca=True),
}
# At --scale 1: the demo's data sets (digits-CUB, digits-VeRi) with 60% of the demos' epochs.
FGVC_DATA = dict(image_size=48, digit_scale=(0.55, 0.9), clutter=0.2, digit_colour='white', train_per_class=150,
                 test_per_class=30)
REID_DATA = dict(image_size=32, digit_scale=(0.7, 0.95), clutter=0.0, num_train_ids=30, images_per_train_id=40,
                 num_test_ids=50, gallery_per_test_id=5, num_cameras=6)
FGVC_EPOCHS, REID_EPOCHS, REID_EVAL_EVERY = 15, 24, 4
LABELS = dict(sa='SA top-1', glca='GLCA top-1', fused='fused top-1')


def train_fgvc(data_root: Path, work_dir: Path, switches: Dict[str, bool], seed: int, epochs: int) -> Dict:
    """One MMPretrain run of the demo config with ``switches``: ``{'epoch', 'fused', 'sa'[, 'glca']}`` -> per-epoch top-1 (%)."""
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    import dcal_plugin.mmpretrain  # noqa: F401  (registers DCAL)
    cfg = Config.fromfile(str(FGVC_CONFIG))
    cfg.model.backbone.update(switches)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    warmup = min(2, epochs - 1)  # the demo's schedule, over ``epochs``
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=warmup, convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', T_max=epochs - warmup, by_epoch=True, begin=warmup, end=epochs)][warmup == 0:]
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint.update(interval=epochs, max_keep_ckpts=1)
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook['type'] != 'AttentionRolloutHook']
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    RUNNERS.build(cfg).train()
    [scalars] = work_dir.glob('*/vis_data/scalars.json')
    rows = [row for row in map(json.loads, scalars.read_text().splitlines()) if 'accuracy/top1' in row]
    curve = dict(epoch=[row['step'] for row in rows], fused=[row['accuracy/top1'] for row in rows],
                 sa=[row['dcal/sa_top1'] for row in rows])
    if switches['use_glca']:
        curve['glca'] = [row['dcal/glca_top1'] for row in rows]
    return curve


def train_reid(data_root: Path, save_dir: Path, switches: Dict[str, bool], seed: int, epochs: int,
               eval_every: int) -> Dict:
    """One torchreid run of the demo config with ``switches``: ``{'epoch', '<feature> mAP', '<feature> R1'}`` -> per test (%)."""
    import torchreid

    from dcal_plugin.torchreid import build_engine, evaluate_branches, get_default_config
    from dcal_plugin.torchreid.config import engine_run_kwargs
    cfg = get_default_config()
    cfg.merge_from_file(str(REID_CONFIG))
    cfg.merge_from_list(['data.root', str(data_root), 'data.save_dir', str(save_dir), 'train.seed', seed,
                         'train.max_epoch', epochs, 'test.eval_freq', eval_every,
                         'model.use_glca', switches['use_glca'], 'model.use_pwca', switches['use_pwca']])
    torchreid.utils.set_random_seed(seed)
    engine = build_engine(cfg)
    curve: Dict[str, List[float]] = dict(epoch=[])

    def test(dist_metric='euclidean', normalize_feature=False, use_metric_cuhk03=False, **_) -> float:
        """torchreid calls this after every ``eval_every`` epochs and at the end: record every feature's mAP and Rank-1."""
        [results] = evaluate_branches(engine, dist_metric, normalize_feature, use_metric_cuhk03).values()
        curve['epoch'].append(engine.epoch + 1)
        for feature, result in results.items():
            curve.setdefault(f'{feature} mAP', []).append(100 * result.mAP)
            curve.setdefault(f'{feature} R1', []).append(100 * float(result.cmc[0]))
        return float(result.cmc[0])

    engine.test = test
    engine.run(**engine_run_kwargs(cfg))
    return curve


def mean_std(values: Sequence[float]) -> str:
    return f'{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}'


def table(runs: Dict[str, Dict[str, List[Dict]]], task: str, columns: Sequence[str]) -> List[str]:
    """Markdown rows: per variant, the mean ± std over seeds of each column's final value."""
    lines = ['| variant | ' + ' | '.join(LABELS.get(column, column) for column in columns) + ' |',
             '|---|' + '---|' * len(columns)]
    for variant, by_task in runs.items():
        curves = by_task.get(task, [])
        cells = [mean_std([curve[column][-1] for curve in curves]) if curves and column in curves[0] else '–'
                 for column in columns]
        lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return lines


def write_report(result: Dict, out_dir: Path) -> None:
    """``ablation.md`` (tables) and ``ablation.png`` (mean curves with a ±std band per variant)."""
    runs, setup = result['runs'], result['setup']
    lines = [
        '# Ablation of DCAL\'s branches on the built-in digits data',
        '',
        f'Written by `{setup["command"]}` on {setup["device"]} in {setup["minutes"]:.0f} min: '
        f'seeds {setup["seeds"]}, the same budget for every variant. Mean ± std over seeds of the final '
        'epoch. **Small generated data, trained from scratch: these are not paper numbers.**', '']
    if any('fgvc' in by_task for by_task in runs.values()):
        lines += [f'## FGVC: digits-CUB (10 classes, chance 10%), top-1 (%) after {setup["fgvc_epochs"]} epochs',
                  f'`{FGVC_CONFIG.relative_to(ROOT)}` with the branches switched off; data {setup["fgvc_data"]}.', '',
                  *table(runs, 'fgvc', ('sa', 'glca', 'fused')), '']
    if any('reid' in by_task for by_task in runs.values()):
        lines += [f'## Re-ID: digits-VeRi-776 (50 test identities), after {setup["reid_epochs"]} epochs',
                  f'`{REID_CONFIG.relative_to(ROOT)}` with the branches switched off; data {setup["reid_data"]}. '
                  'Without GLCA the retrieval feature is SA\'s.', '',
                  *table(runs, 'reid', ('SA mAP', 'SA R1', 'GLCA mAP', 'GLCA R1', 'SA+GLCA mAP', 'SA+GLCA R1')), '']
    lines += ['![learning curves](ablation.png)', '']
    (out_dir / 'ablation.md').write_text('\n'.join(lines))
    plot(runs, out_dir / 'ablation.png')


def plot(runs: Dict[str, Dict[str, List[Dict]]], path: Path) -> None:
    """One panel per task: the headline metric per epoch, mean over seeds with a ±std band."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(task, title) for task, title in (
        ('fgvc', 'digits-CUB: fused top-1 (%)'), ('reid', 'digits-VeRi: mAP of the retrieval feature (%)'))
        if any(task in by_task for by_task in runs.values())]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, (task, title) in zip(axes[0], panels):
        for variant, by_task in runs.items():
            curves = by_task.get(task, [])
            if not curves:
                continue
            column = 'fused' if task == 'fgvc' else next(c for c in ('SA+GLCA mAP', 'SA mAP') if c in curves[0])
            values = np.array([curve[column] for curve in curves])
            mean, std = values.mean(0), values.std(0)
            axis.plot(curves[0]['epoch'], mean, marker='o', markersize=3, label=variant)
            axis.fill_between(curves[0]['epoch'], mean - std, mean + std, alpha=0.2)
        axis.set_title(title)
        axis.set_xlabel('epoch')
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', type=Path, default=ROOT / 'docs', help='where ablation.md/.png/.json go')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs' / 'ablation', help='data, logs, checkpoints')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--tasks', nargs='+', choices=('fgvc', 'reid'), default=['fgvc', 'reid'])
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument('--scale', type=float, default=1.0, help='multiplies training images and epochs')
    args = parser.parse_args(argv)
    from dcal_plugin.demo_data import make_demo_data

    start = time.time()
    fgvc_epochs, reid_epochs = max(1, round(FGVC_EPOCHS * args.scale)), max(1, round(REID_EPOCHS * args.scale))
    fgvc_data = dict(FGVC_DATA, train_per_class=max(2, round(FGVC_DATA['train_per_class'] * args.scale)))
    reid_data = dict(REID_DATA, images_per_train_id=max(4, round(REID_DATA['images_per_train_id'] * args.scale)))
    roots = {}
    if 'fgvc' in args.tasks:
        roots['fgvc'] = make_demo_data(args.work_dir / 'data', 'cub', overwrite=True, **fgvc_data)
    if 'reid' in args.tasks:
        roots['reid'] = make_demo_data(args.work_dir / 'data', 'veri776', overwrite=True, **reid_data)
    runs: Dict[str, Dict[str, List[Dict]]] = {variant: {} for variant in args.variants}
    jobs = [(task, variant, seed) for task in args.tasks for variant in args.variants for seed in args.seeds]
    for number, (task, variant, seed) in enumerate(jobs, 1):
        run_dir = args.work_dir / task / variant.split(' (')[0].replace(' + ', '+').replace(' ', '_') / f'seed{seed}'
        run_dir.mkdir(parents=True, exist_ok=True)
        began = time.time()
        with open(run_dir / 'console.log', 'w') as log, contextlib.redirect_stdout(log):
            if task == 'fgvc':
                curve = train_fgvc(roots['fgvc'], run_dir, VARIANTS[variant], seed, fgvc_epochs)
            else:
                curve = train_reid(roots['reid'], run_dir, VARIANTS[variant], seed, reid_epochs,
                                   max(1, round(REID_EVAL_EVERY * args.scale)))
        runs[variant].setdefault(task, []).append(curve)
        final = ', '.join(f'{key} {values[-1]:.1f}' for key, values in curve.items() if key != 'epoch')
        print(f'[{number}/{len(jobs)}] {task} | {variant} | seed {seed}: {final} ({time.time() - began:.0f} s; '
              f'log {run_dir / "console.log"})', flush=True)
    import torch
    setup = dict(command='python tools/ablation.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
                 device=torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU, {torch.get_num_threads()} threads', minutes=(time.time() - start) / 60,
                 seeds=args.seeds, scale=args.scale, fgvc_epochs=fgvc_epochs, reid_epochs=reid_epochs,
                 fgvc_data=fgvc_data, reid_data=reid_data)
    result = dict(setup=setup, runs=runs)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / 'ablation.json').write_text(json.dumps(result, indent=1))
    write_report(result, args.out_dir)
    print((args.out_dir / 'ablation.md').read_text())
    return result


if __name__ == '__main__':
    main()
