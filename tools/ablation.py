"""Ablation of DCAL's branches and of GLCA's query selection on the built-in digits data.

Variants, each with the same budget and seeds: SA only, SA + GLCA, SA + PWCA, full DCAL, and DCAL
with random GLCA queries at train and test time (the paper's "random queries" row). Every model is
fine-tuned from the built-in pretrained ViT, as the paper fine-tunes ImageNet weights. FGVC goes
through the MMPretrain demo config on digits-CUB (its 10 epochs; top-1 of SA, GLCA and fused, from
mmengine's validation after every epoch), Re-ID through the torchreid engine on digits-VeRi-776 with
``make demo-reid``'s config (24 epochs; mAP and Rank-1, tested every few epochs). After training, in
the same process:

- every model with GLCA is tested twice, with rollout and with random queries (torch's RNG seeded
  with ``EVAL_SEED``); per seed the paired difference rollout - random, and its mean over seeds with
  a 95% Student-t interval (n - 1 degrees of freedom), so that seed noise cannot hide the effect;
- every variant against SA only, paired by seed (same seed, same data order), with the same interval;
- FGVC models are also scored on the train split through the test pipeline (no crop, no flip):
  train - test gap, PWCA's claimed effect being less over-fitting;
- Re-ID runs log, averaged over the last epoch: per-branch cross-entropy and triplet losses, the
  share of PWCA partners with the image's identity, and how far the PWCA rows' batch statistics
  (what their BNNeck normalises with) lie from the SA rows'; plus the final uncertainty weights.

Budget (``make ablation``, 2 CPU cores): an FGVC run took 110-120 s for SA only, 125-170 s for SA +
GLCA, 280-360 s for SA + PWCA and 375-390 s for DCAL, a Re-ID run 95-160 s without PWCA and 170-530 s with it
(two or three runs side by side, one thread each, 2026-12-06). The defaults keep every variant on FGVC, where the
paper has its random-queries row, with seeds 0-4 (25 runs, ~110 min of runs), and cut Re-ID to seeds 0-2 without
'DCAL, random queries' (12 runs, ~40 min); the full grid would take ~3.3 h. ``--seeds``/``--reid-seeds`` split the
grid over processes.

Every finished run leaves its record in its folder; a second call with the same epochs and data keeps those runs
and trains the rest (an unfinished run's folder is cleared first), so an interrupted ablation loses at most the run
it was in.

Writes ``<out>/ablation.md`` (tables), ``<out>/ablation.png`` (learning curves) and
``<out>/ablation.json`` (every raw number); when FGVC ran both DCAL and SA only, then tools/localization.py on the
first FGVC seed's two models: ``<out>/localization.md``, ``.json`` and ``rollout_grid.png``. Numbers on this data
are not paper numbers.

    python tools/ablation.py                       # make ablation: ~2.5 h of runs on 2 CPU cores
    python tools/ablation.py --scale 4 --seeds 0 1 2 3 4 --reid-seeds 0 1 2 3 4   # more data and epochs (GPU)
"""
import argparse
import contextlib
import copy
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor

from dcal_plugin.ablation_report import (
    PAIRED_METRICS, TASK_TITLES, summarise_against_baseline, summarise_overfitting, summarise_paired, write_report)
from dcal_plugin.demo_data.options import DEMO_FGVC_OPTIONS, DEMO_REID_OPTIONS
from dcal_plugin.layouts import CUB_FOLDER
from dcal_plugin.mmpretrain.metrics import read_validation_curve
from dcal_plugin.resources import builtin_checkpoint


ROOT = Path(__file__).resolve().parents[1]
FGVC_CONFIG = ROOT / 'configs' / 'dcal_deit-tiny_digits-cub.py'
REID_CONFIG = ROOT / 'configs' / 'reid' / 'dcal_deit-tiny_digits-veri776.yaml'
RANDOM_QUERIES = 'DCAL, random queries'
VARIANTS = {
    'SA only': dict(use_glca=False, use_pwca=False, query_selection='rollout'),
    'SA + GLCA': dict(use_glca=True, use_pwca=False, query_selection='rollout'),
    'SA + PWCA': dict(use_glca=False, use_pwca=True, query_selection='rollout'),
    'DCAL (SA + GLCA + PWCA)': dict(use_glca=True, use_pwca=True, query_selection='rollout'),
    RANDOM_QUERIES: dict(use_glca=True, use_pwca=True, query_selection='random'),
}
REID_VARIANTS = tuple(variant for variant in VARIANTS if variant != RANDOM_QUERIES)  # the default Re-ID cut
SEEDS, REID_SEED_COUNT = (0, 1, 2, 3, 4), 3  # the budget's cut, see above
# At --scale 1: the demos' data sets (digits-CUB, digits-VeRi), the FGVC demo's 10 epochs and 60% of the Re-ID demo's.
FGVC_DATA, REID_DATA = DEMO_FGVC_OPTIONS, DEMO_REID_OPTIONS
FGVC_EPOCHS, REID_EPOCHS, REID_EVAL_EVERY = 10, 24, 4
EVAL_SEED = 0  # torch's RNG at the start of every test-time evaluation (random queries are drawn from it)
QUERY_SELECTIONS = ('rollout', 'random')
FINISHED = 'record.json'  # in a run's folder once it has trained and been evaluated
LOCALIZED = ('DCAL (SA + GLCA + PWCA)', 'SA only')  # tools/localization.py's model and its plain-ViT baseline


def run_name(variant: str) -> str:
    """The folder of a variant's runs: 'SA only' -> 'SA_only', 'DCAL (SA + GLCA + PWCA)' -> 'DCAL'."""
    return variant.split(' (')[0].replace(', ', '_').replace(' + ', '+').replace(' ', '_')


@contextlib.contextmanager
def queries(dcal: torch.nn.Module, selection: str) -> Iterator[None]:
    """Within the block, ``dcal`` picks GLCA's queries by ``selection`` and torch's RNG starts at ``EVAL_SEED``."""
    trained = dcal.query_selection
    dcal.query_selection = selection
    torch.manual_seed(EVAL_SEED)
    try:
        yield
    finally:
        dcal.query_selection = trained


def evaluate_queries(dcal: torch.nn.Module, selection: str, evaluate: Callable[[], Dict[str, float]]) -> Dict:
    """``evaluate()`` with GLCA's queries picked by ``selection``, plus the model's ``query_selection`` meanwhile."""
    with queries(dcal, selection):
        return dict(evaluate(), query_selection=dcal.query_selection)


def evaluate_test(dcal: torch.nn.Module, evaluate: Callable[[], Dict[str, float]]) -> Dict:
    """``{'test': metrics with the trained queries, 'paired': {'rollout': ..., 'random': ...} (None without GLCA)}``."""
    if not dcal.use_glca:
        return dict(test=evaluate_queries(dcal, dcal.query_selection, evaluate), paired=None)
    paired = {selection: evaluate_queries(dcal, selection, evaluate) for selection in QUERY_SELECTIONS}
    return dict(test=paired[dcal.query_selection], paired=paired)


def check_switches(dcal: torch.nn.Module, switches: Dict) -> None:
    """Raise unless the built core model has the variant's switches (a config key that did not reach it)."""
    built = {name: getattr(dcal, name) for name in switches}
    if built != switches:
        raise RuntimeError(f'the built model has {built}, the variant asks for {switches}')


def stretched_schedule(cfg, epochs: int) -> List[Dict]:
    """The config's param schedulers stretched from its epochs to ``epochs``, less any shorter than one iteration."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        iterations = math.ceil(len(DATASETS.build(cfg.train_dataloader.dataset)) / cfg.train_dataloader.batch_size)
    scale = epochs / cfg.train_cfg.max_epochs
    stretched = [dict(scheduler, **{key: scheduler[key] * scale for key in ('begin', 'end', 'T_max')
                                    if key in scheduler})
                 for scheduler in cfg.param_scheduler]
    # kept when mmengine's conversion to iterations (int(epoch * iterations)) leaves it a non-empty span
    return [scheduler for scheduler in stretched
            if int(scheduler['end'] * iterations) > int(scheduler['begin'] * iterations)]


def build_fgvc_runner(data_root: Path, work_dir: Path, switches: Dict, seed: int, epochs: int):
    """mmengine's Runner for the demo config with the backbone options ``switches``, ``epochs`` and ``seed``."""
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    import dcal_plugin.mmpretrain  # noqa: F401  (registers DCAL)
    cfg = Config.fromfile(str(FGVC_CONFIG))
    cfg.model.backbone.update(switches)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    cfg.param_scheduler = stretched_schedule(cfg, epochs)
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint.update(interval=epochs, max_keep_ckpts=1)
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook['type'] != 'AttentionRolloutHook']
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return RUNNERS.build(cfg)


@torch.no_grad()
def fgvc_top1(model: torch.nn.Module, loader) -> Dict[str, float]:
    """Top-1 (%) of SA, GLCA (with GLCA) and the fused prediction on ``loader``, by the plugin's
    ``DCALBranchAccuracy``."""
    from dcal_plugin.mmpretrain.metrics import DCALBranchAccuracy
    model.eval()
    metric = DCALBranchAccuracy()
    for batch in loader:
        metric.process(batch, [sample.to_dict() for sample in model.test_step(batch)])
    return {name.split('/')[1][:-len('_top1')]: value for name, value in metric.evaluate(len(loader.dataset)).items()}


def unaugmented_train_loader(runner):
    """The train split in a fixed order, through the test pipeline and batching (no crop, no flip)."""
    loader = copy.deepcopy(runner.cfg.test_dataloader)
    loader.dataset = dict(copy.deepcopy(runner.cfg.train_dataloader.dataset), pipeline=loader.dataset.pipeline)
    return runner.build_dataloader(loader)


def train_fgvc(data_root: Path, work_dir: Path, switches: Dict, seed: int, epochs: int) -> Dict:
    """One MMPretrain run: its validation curve, test top-1 (paired rollout/random with GLCA) and train top-1."""
    runner = build_fgvc_runner(data_root, work_dir, switches, seed, epochs)
    runner.train()
    dcal = runner.model.backbone.dcal
    check_switches(dcal, switches)
    record = dict(seed=seed, query_selection=dcal.query_selection, curve=read_validation_curve(work_dir),
                  **evaluate_test(dcal, lambda: fgvc_top1(runner.model, runner.test_dataloader)))
    train_loader = unaugmented_train_loader(runner)
    record['train'] = evaluate_queries(dcal, dcal.query_selection, lambda: fgvc_top1(runner.model, train_loader))
    return record


def build_reid_engine(data_root: Path, save_dir: Path, switches: Dict, seed: int, epochs: int, eval_every: int):
    """The demo Re-ID config with ``switches``, seeded, and the DCALEngine built from it: ``(engine, cfg)``."""
    import torchreid

    from dcal_plugin.torchreid import build_engine, get_default_config
    cfg = get_default_config()
    cfg.merge_from_file(str(REID_CONFIG))
    cfg.merge_from_list(['data.root', str(data_root), 'data.save_dir', str(save_dir), 'train.seed', seed,
                         'model.checkpoint', str(builtin_checkpoint()),  # fine-tuned, as make demo-reid
                         'train.max_epoch', epochs, 'test.eval_freq', eval_every,
                         *[item for name, value in switches.items() for item in (f'model.{name}', value)]])
    torchreid.utils.set_random_seed(seed)
    engine = build_engine(cfg)
    check_switches(engine.model.dcal, switches)
    return engine, cfg


def reid_metrics(engine, cfg) -> Dict[str, float]:
    """mAP and Rank-1 (%) of every feature (SA, GLCA, SA+GLCA) on the one test set, as the config tests."""
    from dcal_plugin.torchreid import evaluate_branches
    [results] = evaluate_branches(engine, cfg.test.dist_metric, cfg.test.normalize_feature,
                                  cfg.test.use_metric_cuhk03).values()
    metrics = {}
    for feature, result in results.items():
        metrics.update({f'{feature} mAP': 100 * result.mAP, f'{feature} R1': 100 * float(result.cmc[0])})
    return metrics


def record_test_curve(engine, cfg) -> Dict[str, List[float]]:
    """Replace ``engine.test`` (run every ``eval_freq`` epochs and at the end) by one recording the metrics."""
    curve: Dict[str, List[float]] = dict(epoch=[])

    def test(**_) -> float:
        """Record every feature's mAP and Rank-1; return the retrieval feature's Rank-1 in [0, 1], as torchreid's."""
        metrics = reid_metrics(engine, cfg)
        curve['epoch'].append(engine.epoch + 1)
        for name, value in metrics.items():
            curve.setdefault(name, []).append(value)
        return metrics['SA+GLCA R1' if 'SA+GLCA R1' in metrics else 'SA R1'] / 100

    engine.test = test
    return curve


def pwca_statistics(out, pids: Tensor, partner: Tensor) -> Dict[str, float]:
    """Share of same-identity PWCA partners (and its expectation in this batch), PWCA vs SA batch statistics."""
    same = pids[:, None] == pids[None, :]
    sa, pwca = out.sa_feature.detach(), out.pwca_feature.detach()
    return dict(
        same_id_partners=(pids[partner] == pids).float().mean().item(),
        same_id_expected=((same.sum(1) - 1) / (len(pids) - 1)).float().mean().item(),
        batch_mean_gap=(pwca.mean(0) - sa.mean(0)).abs().mean().item(),
        batch_std_gap=(pwca.std(0, unbiased=False) - sa.std(0, unbiased=False)).abs().mean().item(),
        sa_batch_std=sa.std(0, unbiased=False).mean().item())


def record_diagnostics(engine) -> List[Dict[str, float]]:
    """Wrap the engine's model forward and branch loss so that every train step appends its diagnostics to the list."""
    from dcal_plugin.core.dcal_model import random_derangement
    from dcal_plugin.core import BRANCHES
    steps: List[Dict[str, float]] = []
    model, forward, branch_loss = engine.model, engine.model.forward, engine.branch_loss
    current = {}  # this step's model output and PWCA partners

    def forward_with_known_partner(x: Tensor, distractor_index: Optional[Tensor] = None, branch_outputs: bool = False):
        """The model's forward; in training, the PWCA partners are drawn here as the model draws them, and kept."""
        if model.training and model.dcal.use_pwca and distractor_index is None:
            distractor_index = random_derangement(x.shape[0]).to(x.device)
        out = forward(x, distractor_index, branch_outputs=branch_outputs)
        if model.training:
            current.update(output=out, partner=distractor_index)
            steps.append(dict(epoch=engine.epoch + 1))
        return out

    def recorded_branch_loss(feature: Tensor, logits: Tensor, pids: Tensor) -> Tensor:
        """The engine's branch loss; records the branch's unweighted cross-entropy and triplet loss beside it."""
        out = current['output']
        name = next(name for name in BRANCHES if getattr(out, f'{name}_feature') is feature)
        with torch.no_grad():
            steps[-1].update({f'ce_{name}': engine.criterion_x(logits, pids).item(),
                              f'triplet_{name}': engine.criterion_t(feature, pids).item()})
            if name == 'pwca':
                steps[-1].update(pwca_statistics(out, pids, current['partner']))
        return branch_loss(feature, logits, pids)

    model.forward, engine.branch_loss = forward_with_known_partner, recorded_branch_loss
    return steps


def summarise_diagnostics(steps: List[Dict[str, float]], model) -> Dict:
    """Per-epoch means of the step diagnostics, the last epoch's, and the final uncertainty weights ``w_*``."""
    from dcal_plugin.core import BRANCHES
    epochs = sorted({row['epoch'] for row in steps})
    per_epoch = []
    for epoch in epochs:
        rows = [row for row in steps if row['epoch'] == epoch]
        means = {key: statistics.fmean(row[key] for row in rows) for key in rows[0] if key != 'epoch'}
        per_epoch.append(dict(epoch=epoch, steps=len(rows), **means))
    present = (True, model.dcal.use_glca, model.dcal.use_pwca)
    weights = {f'w_{name}': weight for name, weight, used in
               zip(BRANCHES, model.loss_weighting.weights.tolist(), present) if used}
    return dict(last_epoch=per_epoch[-1], weights=weights, per_epoch=per_epoch)


def train_reid(data_root: Path, save_dir: Path, switches: Dict, seed: int, epochs: int, eval_every: int) -> Dict:
    """One torchreid run: its test curve, test metrics (paired rollout/random with GLCA) and training diagnostics."""
    from dcal_plugin.torchreid.config import engine_run_kwargs
    engine, cfg = build_reid_engine(data_root, save_dir, switches, seed, epochs, eval_every)
    curve = record_test_curve(engine, cfg)
    steps = record_diagnostics(engine)
    engine.run(**engine_run_kwargs(cfg))
    dcal = engine.model.dcal
    return dict(seed=seed, query_selection=dcal.query_selection, curve=curve,
                **evaluate_test(dcal, lambda: reid_metrics(engine, cfg)),
                diagnostics=summarise_diagnostics(steps, engine.model))


def progress(head: str, task: str, record: Dict, seconds: float, log: Path) -> str:
    """The progress lines of one run: its final values, then (with GLCA) its paired rollout vs random evaluation."""
    final = ', '.join(f'{key} {values[-1]:.1f}' for key, values in record['curve'].items() if key != 'epoch')
    lines = [f'{head}: {final} ({seconds:.0f} s; log {log})']
    if record['paired']:
        rollout, random = record['paired']['rollout'], record['paired']['random']
        pairs = ', '.join(f'{metric} {rollout[metric]:.1f} vs {random[metric]:.1f}' for metric in PAIRED_METRICS[task])
        lines.append(f'{head} | rollout vs random queries: {pairs}')
    return '\n'.join(lines)


def what_was_cut(tasks: Sequence[str], seeds: Dict[str, List[int]], variants: Dict[str, List[str]]) -> str:
    """The report header's sentence: per task, the seeds and the variants left out, and why the defaults cut."""
    parts = []
    for task in tasks:
        left_out = [variant for variant in VARIANTS if variant not in variants[task]]
        parts.append(f'{TASK_TITLES[task]} ran {len(seeds[task])} seeds {seeds[task]}, '
                     + (f'without {", ".join(left_out)}' if left_out else 'every variant'))
    return ('; '.join(parts) + '. Why (`make ablation`\'s defaults): the full grid, 5 variants x 5 seeds x 2 tasks, '
            'would take ~3.3 h of runs on 2 CPU cores; the defaults keep every run\'s epochs and every variant on FGVC '
            '(the paper\'s random-queries row is on CUB) with 5 seeds, and cut Re-ID to 3 seeds without DCAL, random '
            'queries: ~2.5 h.')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command line; Re-ID's seeds and variants default to the FGVC ones less the budget's cut."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', type=Path, default=ROOT / 'docs', help='where ablation.md/.png/.json go')
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs' / 'ablation',
                        help='data, logs, checkpoints')
    parser.add_argument('--seeds', type=int, nargs='+', default=list(SEEDS), help='seeds of every FGVC variant')
    parser.add_argument('--reid-seeds', type=int, nargs='+',
                        help=f'seeds of every Re-ID variant (default: the first {REID_SEED_COUNT} of --seeds)')
    parser.add_argument('--tasks', nargs='+', choices=('fgvc', 'reid'), default=['fgvc', 'reid'])
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS),
                        help='FGVC variants')
    parser.add_argument('--reid-variants', nargs='+', choices=list(VARIANTS),
                        help=f'Re-ID variants (default: those of --variants except {RANDOM_QUERIES!r})')
    parser.add_argument('--scale', type=float, default=1.0, help='multiplies training images and epochs')
    args = parser.parse_args(argv)
    args.out_dir, args.work_dir = args.out_dir.resolve(), args.work_dir.resolve()  # the localization step runs in ROOT
    args.reid_seeds = args.reid_seeds or args.seeds[:REID_SEED_COUNT]
    args.reid_variants = args.reid_variants or [variant for variant in args.variants if variant in REID_VARIANTS]
    return args


def grid(args: argparse.Namespace) -> Dict:
    """What runs at ``--scale``: epochs, data, seeds and variants per task (the keys ``setup`` records)."""
    return dict(
        tasks=args.tasks, seeds=dict(fgvc=args.seeds, reid=args.reid_seeds),
        variants=dict(fgvc=args.variants, reid=args.reid_variants), scale=args.scale,
        pretrained=builtin_checkpoint().name,
        fgvc_epochs=max(1, round(FGVC_EPOCHS * args.scale)), reid_epochs=max(1, round(REID_EPOCHS * args.scale)),
        reid_eval_every=max(1, round(REID_EVAL_EVERY * args.scale)),
        fgvc_data=dict(FGVC_DATA, train_per_class=max(2, round(FGVC_DATA['train_per_class'] * args.scale))),
        reid_data=dict(REID_DATA, images_per_train_id=max(4, round(REID_DATA['images_per_train_id'] * args.scale))))


def run_job(task: str, variant: str, seed: int, root: Path, run_dir: Path, plan: Dict) -> Dict:
    """One training run and its evaluations, its console output in ``run_dir/console.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / 'console.log', 'w') as log, contextlib.redirect_stdout(log):
        if task == 'fgvc':
            return train_fgvc(root, run_dir, VARIANTS[variant], seed, plan['fgvc_epochs'])
        return train_reid(root, run_dir, VARIANTS[variant], seed, plan['reid_epochs'], plan['reid_eval_every'])


def run_all(plan: Dict, work_dir: Path) -> Dict[str, Dict[str, List[Dict]]]:
    """Every (task, variant, seed) of ``plan`` on freshly written data: ``{variant: {task: [run record per seed]}}``."""
    from dcal_plugin.demo_data import make_demo_data
    layouts = dict(fgvc='cub', reid='veri776')
    roots = {task: make_demo_data(work_dir / 'data', layouts[task], overwrite=True, **plan[f'{task}_data'])
             for task in plan['tasks']}
    runs: Dict[str, Dict[str, List[Dict]]] = {
        variant: {} for variant in VARIANTS if any(variant in plan['variants'][task] for task in plan['tasks'])}
    jobs = [(task, variant, seed) for task in plan['tasks'] for variant in plan['variants'][task]
            for seed in plan['seeds'][task]]
    settings = json.loads(json.dumps(run_settings(plan)))  # as record.json holds them
    for number, (task, variant, seed) in enumerate(jobs, 1):
        run_dir = work_dir / task / run_name(variant) / f'seed{seed}'
        head = f'[{number}/{len(jobs)}] {task} | {variant} | seed {seed}'
        began = time.time()
        record = finished_record(run_dir, settings)
        if record is None:
            shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run's leftovers: it starts again from nothing
            record = dict(run_job(task, variant, seed, roots[task], run_dir, plan), seconds=time.time() - began)
            (run_dir / FINISHED).write_text(json.dumps(dict(plan=settings, record=record)))
        else:
            head += ' (kept from an earlier call)'
        runs[variant].setdefault(task, []).append(record)
        print(progress(head, task, record, time.time() - began, run_dir / 'console.log'), flush=True)
    return runs


def finished_record(run_dir: Path, settings: Dict) -> Optional[Dict]:
    """The record a run with ``settings`` (:func:`run_settings`) left in ``run_dir``, or None.

    An interrupted ablation goes on from the runs it finished.
    """
    path = run_dir / FINISHED
    if not path.is_file():
        return None
    finished = json.loads(path.read_text())
    return finished['record'] if finished['plan'] == settings else None


def run_settings(plan: Dict) -> Dict:
    """What a single run of ``plan`` depends on: all but the grid's choice of tasks, seeds and variants."""
    return {key: value for key, value in plan.items() if key not in ('tasks', 'seeds', 'variants')}


def localization_command(work_dir: Path, out_dir: Path, seed: int) -> List[str]:
    """tools/localization.py on the FGVC DCAL model of ``seed`` against the SA-only ViT of that seed (last
    checkpoints), to run in the repository's root."""
    model, baseline = ((work_dir / 'fgvc' / run_name(variant) / f'seed{seed}' / 'last_checkpoint').read_text().strip()
                       for variant in LOCALIZED)
    return [sys.executable, str(ROOT / 'tools' / 'localization.py'), str(FGVC_CONFIG.relative_to(ROOT)), model,
            '--baseline', baseline, '--baseline-name', 'plain ViT (SA only)',
            '--baseline-cfg-options', 'model.backbone.use_glca=False', 'model.backbone.use_pwca=False',
            '--cfg-options', f'test_dataloader.dataset.data_root={work_dir / "data" / CUB_FOLDER}',
            '--out-dir', str(out_dir)]


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Train every (task, variant, seed), evaluate, and write ablation.json, .md and .png; with FGVC's DCAL and SA-only
    runs, then tools/localization.py on those of the first seed (localization.md, rollout_grid.png)."""
    args = parse_args(argv)
    start = time.time()
    plan = grid(args)
    runs = run_all(plan, args.work_dir)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU, {torch.get_num_threads()} thread(s)'
    setup = dict(command='python tools/ablation.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
                 device=device, minutes=(time.time() - start) / 60,
                 run_minutes=sum(record['seconds'] for by_task in runs.values() for records in by_task.values()
                                 for record in records) / 60, **plan, eval_seed=EVAL_SEED,
                 fgvc_config=str(FGVC_CONFIG.relative_to(ROOT)), reid_config=str(REID_CONFIG.relative_to(ROOT)),
                 cut=what_was_cut(plan['tasks'], plan['seeds'], plan['variants']),
                 switches={variant: VARIANTS[variant] for variant in runs})
    result = dict(setup=setup, runs=runs, paired=summarise_paired(runs), overfitting=summarise_overfitting(runs),
                  against_sa_only=summarise_against_baseline(runs))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / 'ablation.json').write_text(json.dumps(result, indent=1))
    write_report(result, args.out_dir)
    print((args.out_dir / 'ablation.md').read_text())
    if 'fgvc' in plan['tasks'] and set(LOCALIZED) <= set(plan['variants']['fgvc']):
        first_seed = plan['seeds']['fgvc'][0]
        subprocess.run(localization_command(args.work_dir, args.out_dir, first_seed), cwd=ROOT, check=True)
    return result


if __name__ == '__main__':
    main()
