"""Rehearse fine-tuning on the CPU: the paper's recipes, scaled down, fine-tune the built-in pretrained ViT.

Every paper row fine-tunes ImageNet weights; a recipe mistake that erases them (torch's coupled
``Adam(weight_decay=0.05)``) does not show from scratch. Here the shipped recipes fine-tune the
built-in pretrained ViT (``configs/_pretrained_``, trained on which two digits a canvas shows,
none of the target test samples) with only the model, image size, data and epochs shrunk:

- FGVC: ``configs/dcal_deit-tiny_digits-cub.py`` (the paper's FGVC recipe scaled down, the demo) on
  digits-CUB, fine-tuned from the pretrained ViT; the same budget from scratch; and fine-tuned
  with torch's ``Adam(weight_decay=0.05)``, the recipe before issue 22.
- Re-ID: ``configs/reid/dcal_deit-tiny_veri776.yaml`` (the paper's Re-ID recipe, TransReID's ViT
  baseline) scaled down to digits-VeRi-776 at 32x32, fine-tuned, from scratch, and fine-tuned with
  the Re-ID recipe before issue 22; and ``make demo-reid``'s config (AdamW), fine-tuned and from scratch.

Per epoch: every block's relative weight change from where training started (``‖w - w₀‖ / ‖w₀‖``),
the norm of ``blocks.0.attn.qkv.weight`` against its start, and test top-1 / mAP. Writes
``<out-dir>/rehearsal.{md,json,png}``. Numbers on this data are not paper numbers.

    python tools/rehearsal.py          # make rehearsal
"""
import argparse
import json
import re
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from dcal_plugin.demo_data import make_demo_data
from dcal_plugin.demo_data.options import DEMO_FGVC_OPTIONS, DEMO_REID_OPTIONS
from dcal_plugin.recipe_check import weight_changes
from dcal_plugin.resources import builtin_checkpoint, config_path

# paper_lr: the recipe's lr rule as it is (5e-4 x 16 / 512); otherwise the demo config's, 40 times that (the lr
# summed over its 940 steps is the paper's over 37,500)
FGVC_RUNS = {
    'fine-tuned, the recipe': dict(pretrained=True, optimizer='AdamW', paper_lr=True),
    'from scratch, the recipe': dict(pretrained=False, optimizer='AdamW', paper_lr=True),
    'fine-tuned, Adam(weight_decay=0.05)': dict(pretrained=True, optimizer='Adam', paper_lr=True),
    'fine-tuned, the demo\'s lr': dict(pretrained=True, optimizer='AdamW', paper_lr=False),
    'from scratch, the demo\'s lr': dict(pretrained=False, optimizer='AdamW', paper_lr=False),
}
# recipe: 'paper' (configs/reid/dcal_deit-tiny_veri776.yaml scaled down), 'before' (that, with the Re-ID recipe before
# issue 22: label smoothing, hinge triplet 0.3, torchreid's flip / crop / erasing, biases at the weights' lr; its
# retrieval feature after BNNeck is gone, so that part of it is not rehearsed) or 'demo' (make demo-reid's config:
# AdamW 2e-3, 40 epochs of 8 identities x 4 images, no augmentation)
REID_RUNS = {
    'fine-tuned, the recipe': dict(pretrained=True, recipe='paper'),
    'from scratch, the recipe': dict(pretrained=False, recipe='paper'),
    'fine-tuned, the recipe before issue 22': dict(pretrained=True, recipe='before'),
    "fine-tuned, make demo-reid's config": dict(pretrained=True, recipe='demo'),
    "from scratch, make demo-reid's config": dict(pretrained=False, recipe='demo'),
}
DEMO_REID_CONFIG = 'reid/dcal_deit-tiny_digits-veri776.yaml'
OLD_REID_RECIPE = ['loss.softmax.label_smooth', True, 'loss.triplet.margin', 0.3,
                   'data.transforms', ['random_flip', 'random_crop', 'random_erase'], 'train.bias_lr_factor', 1.0]
REID_CONFIG = 'reid/dcal_deit-tiny_veri776.yaml'  # the paper's Re-ID recipe, TransReID's ViT baseline
REID_EPOCHS, REID_EVAL_EVERY, PAPER_REID_EPOCHS, PAPER_REID_SIZE = 24, 4, 120, 256  # test every 4 epochs
FINISHED = 'record.json'  # in a run's folder once it has trained and been tested
TRACKED = 'blocks.0.attn.qkv.weight'  # the weight whose norm the issue measured through tools/train.py


def fgvc_runner(data_root: Path, work_dir: Path, pretrained: bool, optimizer: str, paper_lr: bool, seed: int):
    """mmengine's Runner for the demo config, from the pretrained ViT or from scratch, with ``optimizer``.

    ``paper_lr``: the paper config's lr (``configs/dcal_deit-tiny_cub.py``), so that the demo config
    differs from the paper's recipe in its model, image size, data and epochs only.
    """
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    import dcal_plugin.mmpretrain  # noqa: F401  (registers DCAL)
    cfg = Config.fromfile(str(config_path('dcal_deit-tiny_digits-cub')))
    cfg.model.backbone.checkpoint_path = str(builtin_checkpoint()) if pretrained else None
    cfg.optim_wrapper.optimizer.type = optimizer
    if paper_lr:
        cfg.optim_wrapper.optimizer.lr = Config.fromfile(
            str(config_path('dcal_deit-tiny_cub'))).optim_wrapper.optimizer.lr
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.update(interval=cfg.train_cfg.max_epochs, max_keep_ckpts=1, save_best=None)
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook['type'] != 'AttentionRolloutHook']
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return RUNNERS.build(cfg)


def train_fgvc(data_root: Path, work_dir: Path, settings: Dict, seed: int) -> Dict:
    """One FGVC run: per-epoch validation top-1 and block drift, the tracked weight's norm change, test top-1."""
    from dcal_plugin.mmpretrain import WeightDriftHook
    from dcal_plugin.mmpretrain.metrics import read_validation_curve
    runner = fgvc_runner(data_root, work_dir, seed=seed, **settings)
    [drift_hook] = [hook for hook in runner.hooks if isinstance(hook, WeightDriftHook)]
    runner.train()
    name = f'backbone.dcal.vit.{TRACKED}'
    norm = (runner.model.state_dict()[name].norm() / drift_hook.reference[name].norm()).item()
    return dict(settings=settings, seed=seed, curve=read_validation_curve(work_dir), iterations=runner.iter,
                drift=block_drift_curves(drift_hook.history), tracked_norm=norm, test=runner.test())


def block_drift_curves(history: List[Dict]) -> Dict[str, List[float]]:
    """``{'blocks.N' | 'glca_block': [drift after each epoch]}`` from a ``WeightDriftHook.history``."""
    groups = [group for group in history[0] if '.blocks.' in group or group.endswith('glca_block')]
    return {group.split('.')[-1] if group.endswith('glca_block') else 'blocks.' + group.rsplit('.', 1)[-1]:
            [changes[group].drift for changes in history] for group in groups}


def reid_config(data_root: Path, save_dir: Path, pretrained: bool, recipe: str, epochs: int, seed: int):
    """The paper's Re-ID recipe scaled down: digits-VeRi at 32x32, 4 blocks of 8x8 patches, ``epochs`` epochs.

    Warm-up (5 of 120 epochs) and padding (10 of 256 pixels) shrink with the epochs and the image;
    SGD 0.008, batch 16 x 4, the losses and the rest stay the recipe's. ``recipe`` (see
    :data:`REID_RUNS`): 'demo' is make demo-reid's config as it is, epochs and all.
    """
    from dcal_plugin.torchreid import get_default_config
    size = DEMO_REID_OPTIONS['image_size']
    cfg = get_default_config()
    if recipe == 'demo':
        cfg.merge_from_file(str(config_path(DEMO_REID_CONFIG)))
        cfg.merge_from_list(['data.root', str(data_root), 'data.save_dir', str(save_dir), 'train.seed', seed,
                             'model.checkpoint', str(builtin_checkpoint()) if pretrained else '',
                             'train.print_freq', 1000, 'test.eval_freq', 2 * REID_EVAL_EVERY])
        return cfg
    cfg.merge_from_file(str(config_path(REID_CONFIG)))
    cfg.merge_from_list([
        'data.root', str(data_root), 'data.height', size, 'data.width', size, 'data.workers', 0,
        'data.padding', round(cfg.data.padding * size / PAPER_REID_SIZE), 'data.save_dir', str(save_dir),
        'model.checkpoint', str(builtin_checkpoint()) if pretrained else '', 'model.pretrained', False,
        'train.max_epoch', epochs,
        'train.warmup_epochs', min(epochs - 1, max(1, round(cfg.train.warmup_epochs * epochs / PAPER_REID_EPOCHS))),
        'train.seed', seed, 'train.print_freq', 1000, 'test.eval_freq', REID_EVAL_EVERY, 'test.ranks', [1, 5, 10],
        *(OLD_REID_RECIPE if recipe == 'before' else [])])
    cfg.model.timm_kwargs.update(depth=4, patch_size=8)
    return cfg


def train_reid(data_root: Path, save_dir: Path, settings: Dict, seed: int) -> Dict:
    """One Re-ID run through torchreid's engine: mAP / Rank-1 every few epochs, block drift per epoch, the tracked
    norm."""
    import torchreid

    from dcal_plugin.torchreid import build_engine, evaluate_branches
    from dcal_plugin.torchreid.config import engine_run_kwargs
    cfg = reid_config(data_root, save_dir, seed=seed, **settings)
    torchreid.utils.set_random_seed(seed)
    engine = build_engine(cfg)
    reference = {name: parameter.detach().clone() for name, parameter in engine.model.named_parameters()}
    history, curve = [], dict(epoch=[])
    update_lr = engine.update_lr

    def record_then_update_lr(*args, **kwargs):
        """torchreid calls it once at the end of every training epoch."""
        history.append(weight_changes(reference, engine.model))
        update_lr(*args, **kwargs)

    def test(**_) -> float:
        """Every feature's mAP and Rank-1 (%), kept; the retrieval feature's Rank-1 in [0, 1], as torchreid's test."""
        [results] = evaluate_branches(engine, cfg.test.dist_metric, cfg.test.normalize_feature).values()
        curve['epoch'].append(engine.epoch + 1)
        for feature, result in results.items():
            curve.setdefault(f'{feature} mAP', []).append(100 * result.mAP)
            curve.setdefault(f'{feature} R1', []).append(100 * float(result.cmc[0]))
        return float(results['SA+GLCA'].cmc[0])

    engine.update_lr, engine.test = record_then_update_lr, test
    engine.run(**engine_run_kwargs(cfg))
    name = f'dcal.vit.{TRACKED}'
    norm = (engine.model.state_dict()[name].norm() / reference[name].norm()).item()
    return dict(settings=settings, seed=seed, curve=curve, iterations=cfg.train.max_epoch * len(engine.train_loader),
                drift=block_drift_curves(history), tracked_norm=norm)


def reid_row(name: str, record: Dict) -> str:
    """A Markdown row: run, final mAP / Rank-1 of SA+GLCA, SA and GLCA, block drift, the tracked weight's norm
    change."""
    curve = record['curve']
    cells = ' | '.join(f'{curve[f"{feature} mAP"][-1]:.1f} / {curve[f"{feature} R1"][-1]:.1f}'
                       for feature in ('SA+GLCA', 'SA', 'GLCA'))
    drift = ', '.join(f'{100 * values[-1]:.1f}' for values in record['drift'].values())
    change = 100 * (record['tracked_norm'] - 1)
    return f'| {name} | {cells} | {drift} | {change:+.1f}% ({change / record["iterations"]:+.4f}% per iteration) |'


def demo_rows_note(records: Dict[str, Dict]) -> str:
    """The sentence on the runs of ``make demo-reid``'s config (its own optimizer, epochs and seed), '' without them."""
    demo = [record for record in records.values() if record['settings'].get('recipe') == 'demo']
    if not demo:
        return ''
    return (f' The rows "make demo-reid\'s config" run `configs/{DEMO_REID_CONFIG}` as it is (AdamW, '
            f'{len(demo[0]["drift"]["blocks.0"])} epochs; seed {demo[0]["seed"]} here, `make demo-reid` uses the '
            "config's); the table per evaluation holds the runs as long as the first.")


def reid_section(records: Dict[str, Dict]) -> List[str]:
    """The Re-ID tables: final results, and the retrieval feature's mAP and largest block drift per evaluation."""
    first = next(iter(records.values()))
    lines = ['## Re-ID: digits-VeRi-776 (50 test identities), '
             '`configs/reid/dcal_deit-tiny_veri776.yaml` scaled down', '',
             f"The paper's Re-ID recipe (TransReID's ViT baseline) at 32x32, {len(first['drift']['blocks.0'])} epochs "
             f'({first["iterations"]} iterations of 16 identities x 4 images; warm-up and padding scaled likewise); '
             'mAP / Rank-1 (%) after the last epoch; drift and norm change as above.' + demo_rows_note(records), '',
             '| run | SA+GLCA | SA | GLCA | block drift (%) | norm change |', '|---|---|---|---|---|---|']
    lines += [reid_row(name, record) for name, record in records.items()]
    same = {name: record for name, record in records.items() if record['curve']['epoch'] == first['curve']['epoch']}
    lines += ['', 'Per evaluation: SA+GLCA mAP (%) / the largest block drift (%).', '',
              '| epoch | ' + ' | '.join(same) + ' |', '|---' * (len(same) + 1) + '|']
    for index, epoch in enumerate(first['curve']['epoch']):
        cells = [f'{record["curve"]["SA+GLCA mAP"][index]:.1f} / '
                 f'{100 * max(values[epoch - 1] for values in record["drift"].values()):.1f}'
                 for record in same.values()]
        lines.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
    return lines


def fgvc_row(name: str, record: Dict) -> str:
    """A Markdown row: run, test top-1 (fused, SA, GLCA), each block's final drift, the tracked weight's norm change."""
    test = record['test']
    drift = ', '.join(f'{100 * values[-1]:.1f}' for values in record['drift'].values())
    change = 100 * (record['tracked_norm'] - 1)
    return (f'| {name} | {test["accuracy/top1"]:.1f} | {test["dcal/sa_top1"]:.1f} | {test["dcal/glca_top1"]:.1f} | '
            f'{drift} | {change:+.1f}% ({change / record["iterations"]:+.4f}% per iteration) |')


def fgvc_section(records: Dict[str, Dict]) -> List[str]:
    """The FGVC tables: final results, and validation top-1 and largest block drift per epoch."""
    first = next(iter(records.values()))
    blocks = ', '.join(first['drift'])
    lines = ['## FGVC: digits-CUB (10 classes, chance 10%), `configs/dcal_deit-tiny_digits-cub.py`', '',
             f'The paper\'s FGVC recipe scaled down ({first["iterations"]} iterations of batch 16); test top-1 (%) '
             f'after the last epoch; drift: ‖w − w₀‖ / ‖w₀‖ (%) of {blocks} after the last epoch, w₀ the weights '
             f'training started from; norm change: ‖w‖ / ‖w₀‖ − 1 of `{TRACKED}`.', '',
             '| run | fused | SA | GLCA | block drift (%) | norm change |', '|---|---|---|---|---|---|']
    lines += [fgvc_row(name, record) for name, record in records.items()]
    lines += ['', 'Per epoch: validation fused top-1 (%) / the largest block drift (%).', '',
              '| epoch | ' + ' | '.join(records) + ' |', '|---' * (len(records) + 1) + '|']
    for index, epoch in enumerate(first['curve']['epoch']):
        cells = [f'{record["curve"]["fused"][index]:.1f} / {100 * max(v[index] for v in record["drift"].values()):.1f}'
                 for record in records.values()]
        lines.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
    return lines


def draw(records: Dict[str, Dict[str, Dict]], path: Path) -> None:
    """Per task: the test metric per epoch and the mean block drift per epoch of every run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = [task for task in ('fgvc', 'reid') if records.get(task)]
    figure, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.6 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        metric = 'fused' if task == 'fgvc' else 'SA+GLCA mAP'
        for name, record in records[task].items():
            curve = record['curve']
            axes[row][0].plot(curve['epoch'], curve[metric], marker='o', label=name)
            drift = list(record['drift'].values())
            mean = [100 * sum(values[i] for values in drift) / len(drift) for i in range(len(drift[0]))]
            axes[row][1].plot(range(1, len(mean) + 1), mean, marker='o', label=name)
        axes[row][0].set(title=f'{TITLES[task]}: test {metric}', xlabel='epoch', ylabel='%')
        axes[row][1].set(title=f'{TITLES[task]}: mean block drift ‖w − w₀‖ / ‖w₀‖', xlabel='epoch', ylabel='%')
        axes[row][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


TITLES = {'fgvc': 'FGVC, digits-CUB', 'reid': 'Re-ID, digits-VeRi-776'}


def finished_or_run(run_dir: Path, settings: Dict, run: Callable[[Path], Dict]) -> Dict:
    """The record a finished run left in ``run_dir`` with the same ``settings``, else ``run(run_dir)``'s, then kept.

    An interrupted rehearsal loses at most the run it was in; the record is written to a
    temporary name and renamed.
    """
    finished = run_dir / FINISHED
    if finished.is_file():
        record = json.loads(finished.read_text())
        if record.get('run_settings') == json.loads(json.dumps(settings)):
            return record
    start = time.time()
    record = dict(run(run_dir), run_settings=settings, seconds=round(time.time() - start))
    partial = finished.with_suffix('.partial')
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(finished)
    return record


def slug(name: str) -> str:
    """A run's folder name: "fine-tuned, the demo's lr" -> 'fine_tuned_the_demo_s_lr'."""
    return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """--out-dir, --work-dir, --tasks, --seed and the epochs of each task (defaults: the demo's)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', type=Path, default=Path('docs'), help='where rehearsal.md/.png/.json go')
    parser.add_argument('--work-dir', type=Path, default=Path('work_dirs', 'rehearsal'), help='data, logs, checkpoints')
    parser.add_argument('--tasks', nargs='+', choices=('fgvc', 'reid'), default=['fgvc', 'reid'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--reid-epochs', type=int, default=REID_EPOCHS, help='Re-ID epochs (the paper: 120)')
    parser.add_argument('--fgvc-train-per-class', type=int, default=DEMO_FGVC_OPTIONS['train_per_class'],
                        help='training images per class (smaller for a quick check)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run every task's runs, then write the tables, the picture and the raw numbers."""
    args = parse_args(argv)
    start, records = time.time(), {}
    if 'fgvc' in args.tasks:
        options = dict(DEMO_FGVC_OPTIONS, train_per_class=args.fgvc_train_per_class)
        root = make_demo_data(args.work_dir / 'data', 'cub', overwrite=True, **options)
        records['fgvc'] = {}
        for name, settings in FGVC_RUNS.items():
            record = finished_or_run(args.work_dir / 'fgvc' / slug(name), dict(settings, data=options, seed=args.seed),
                                     lambda run_dir: train_fgvc(root, run_dir, settings, args.seed))
            records['fgvc'][name] = record
            print(f'FGVC, {name}: test fused top-1 {record["test"]["accuracy/top1"]:.1f}% ({record["seconds"]:.0f} s)',
                  flush=True)
    if 'reid' in args.tasks:
        root = make_demo_data(args.work_dir / 'data', 'veri776', overwrite=True, **DEMO_REID_OPTIONS)
        records['reid'] = {}
        for name, settings in REID_RUNS.items():
            settings = dict(settings, epochs=args.reid_epochs)
            record = finished_or_run(args.work_dir / 'reid' / slug(name), dict(settings, seed=args.seed),
                                     lambda run_dir: train_reid(root, run_dir, settings, args.seed))
            records['reid'][name] = record
            print(f'Re-ID, {name}: SA+GLCA mAP {record["curve"]["SA+GLCA mAP"][-1]:.1f}% ({record["seconds"]:.0f} s)',
                  flush=True)
    lines = ['# Fine-tuning rehearsal: the paper\'s recipes, scaled down, on the built-in pretrained ViT', '',
             f'Written by `python tools/rehearsal.py` on CPU; its runs took '
             f'{sum(r["seconds"] for task in records.values() for r in task.values()) / 60:.0f} min (this call '
             f'{(time.time() - start) / 60:.0f} min: finished runs are kept), seed {args.seed}. '
             f'The pretrained ViT: `{builtin_checkpoint().name}` (`tools/pretrain_source_vit.py`). '
             '**Small generated data: these are not paper numbers.**', '']
    if 'fgvc' in records:
        lines += fgvc_section(records['fgvc']) + ['']
    if 'reid' in records:
        lines += reid_section(records['reid']) + ['']
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / 'rehearsal.md').write_text('\n'.join(lines))
    (args.out_dir / 'rehearsal.json').write_text(json.dumps(records, indent=1))
    draw(records, args.out_dir / 'rehearsal.png')
    print(f'wrote {args.out_dir / "rehearsal.md"}, rehearsal.png and rehearsal.json')
    return records


if __name__ == '__main__':
    main()
