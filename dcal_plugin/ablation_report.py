"""The statistics and the report of ``tools/ablation.py``: paired intervals, over-fitting gaps, markdown tables,
curves."""
import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PAIRED_METRICS = {'fgvc': ('glca', 'fused'), 'reid': ('GLCA mAP', 'GLCA R1', 'SA+GLCA mAP', 'SA+GLCA R1')}
LABELS = dict(sa='SA top-1', glca='GLCA top-1', fused='fused top-1')
TASK_TITLES = dict(fgvc='FGVC', reid='Re-ID')


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Dict[str, Optional[float]]:
    """Mean of ``values`` and its Student-t interval (n - 1 degrees of freedom); no interval for one value."""
    from scipy import stats
    mean = statistics.fmean(values)
    if len(values) < 2:
        return dict(mean=mean, t=None, half_width=None, low=None, high=None, includes_zero=None)
    t = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1))
    half_width = t * statistics.stdev(values) / math.sqrt(len(values))
    return dict(mean=mean, t=t, half_width=half_width, low=mean - half_width, high=mean + half_width,
                includes_zero=mean - half_width <= 0 <= mean + half_width)


def paired_summary(records: List[Dict], metric: str) -> Dict:
    """Per seed rollout, random and their difference for ``metric``, and the difference's mean and 95% interval."""
    rollout = [record['paired']['rollout'][metric] for record in records]
    random = [record['paired']['random'][metric] for record in records]
    difference = [a - b for a, b in zip(rollout, random)]
    return dict(seeds=[record['seed'] for record in records], rollout=rollout, random=random,
                difference=difference, **t_interval(difference))


def summarise_paired(runs: Dict[str, Dict[str, List[Dict]]]) -> Dict[str, Dict[str, Dict[str, Dict]]]:
    """``{task: {variant: {metric: paired_summary}}}`` over the variants with GLCA."""
    return {task: {variant: {metric: paired_summary(by_task[task], metric) for metric in metrics}
                   for variant, by_task in runs.items() if by_task.get(task) and by_task[task][0]['paired']}
            for task, metrics in PAIRED_METRICS.items()}


BASELINE = 'SA only'
AGAINST_BASELINE = {'fgvc': ('fused',), 'reid': ('mAP', 'R1')}  # Re-ID: of each variant's retrieval feature


def retrieval(test: Dict, metric: str) -> float:
    """A Re-ID run's ``metric`` of its retrieval feature: SA+GLCA's with GLCA, SA's without."""
    return test.get(f'SA+GLCA {metric}', test[f'SA {metric}'])


def summarise_against_baseline(runs: Dict[str, Dict[str, List[Dict]]]) -> Dict[str, Dict[str, Dict[str, Dict]]]:
    """``{task: {variant: {metric: per-seed differences variant - SA only, their mean and 95% interval}}}``.

    Paired by seed (the same seed's data order and initialisation of the new layers); variants and
    seeds without an SA-only run of the same seed are left out.
    """
    summary = {}
    for task, metrics in AGAINST_BASELINE.items():
        baseline = {record['seed']: record['test'] for record in runs.get(BASELINE, {}).get(task, [])}
        value = (lambda test, metric: test[metric]) if task == 'fgvc' else retrieval
        for variant, by_task in runs.items():
            records = [record for record in by_task.get(task, []) if record['seed'] in baseline]
            if variant == BASELINE or not records:
                continue
            summary.setdefault(task, {})[variant] = {metric: dict(
                seeds=[record['seed'] for record in records],
                difference=(difference := [value(record['test'], metric) - value(baseline[record['seed']], metric)
                                           for record in records]), **t_interval(difference)) for metric in metrics}
    return summary


def against_baseline_sections(summary: Dict[str, Dict[str, Dict[str, Dict]]]) -> List[str]:
    """Per task: each variant minus SA only, per seed, with the mean and its 95% interval."""
    lines = []
    for task, by_variant in summary.items():
        lines += [f'## {TASK_TITLES[task]}: each variant against SA only, paired by seed',
                  'Test metric of the variant minus SA only\'s, per seed (Re-ID: each variant\'s retrieval feature); '
                  'mean over seeds and 95% Student-t interval.', '',
                  '| variant | metric | per seed | mean difference | 95% interval |', '|---|---|---|---|---|']
        for variant, by_metric in by_variant.items():
            for metric, entry in by_metric.items():
                per_seed = ', '.join(f'{value:+.1f}' for value in entry['difference'])
                lines.append(f'| {variant} | {LABELS.get(metric, metric)} | {per_seed} | {entry["mean"]:+.1f} | '
                             f'{interval_text(entry)} |')
        lines.append('')
    return lines


def summarise_overfitting(runs: Dict[str, Dict[str, List[Dict]]]) -> Dict[str, Dict[str, List[float]]]:
    """Per FGVC variant, per seed: fused top-1 on the train and test splits and the gap train - test."""
    summary = {}
    for variant, by_task in runs.items():
        if by_task.get('fgvc'):
            train = [record['train']['fused'] for record in by_task['fgvc']]
            test = [record['test']['fused'] for record in by_task['fgvc']]
            summary[variant] = dict(train=train, test=test, gap=[a - b for a, b in zip(train, test)])
    return summary


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    """``'mean ± sample std'`` (std 0 for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}'


def table(runs: Dict[str, Dict[str, List[Dict]]], task: str, columns: Sequence[str]) -> List[str]:
    """Markdown rows: per variant, the mean ± std over seeds of each column's final value."""
    lines = ['| variant | ' + ' | '.join(LABELS.get(column, column) for column in columns) + ' |',
             '|---|' + '---|' * len(columns)]
    for variant, by_task in runs.items():
        curves = [record['curve'] for record in by_task.get(task, [])]
        if curves:
            cells = [mean_std([curve[column][-1] for curve in curves]) if column in curves[0] else '–'
                     for column in columns]
            lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return lines


def interval_text(summary: Dict) -> str:
    """``'[low, high]'`` of a paired summary, or '–' for a single seed."""
    return '–' if summary['low'] is None else f'[{summary["low"]:+.1f}, {summary["high"]:+.1f}]'


def paired_table(paired: Dict[str, Dict[str, Dict]], seeds: Sequence[int]) -> List[str]:
    """Markdown rows: per variant and metric, rollout / random per seed, the mean difference and its 95% interval."""
    lines = ['| variant | metric | ' + ' | '.join(f'seed {seed}' for seed in seeds)
             + ' | mean difference | 95% interval |', '|---|---|' + '---|' * (len(seeds) + 2)]
    for variant, by_metric in paired.items():
        for metric, summary in by_metric.items():
            cells = [f'{a:.1f} / {b:.1f}' for a, b in zip(summary['rollout'], summary['random'])]
            lines.append(f'| {variant} | {LABELS.get(metric, metric)} | ' + ' | '.join(cells)
                         + f' | {summary["mean"]:+.1f} | {interval_text(summary)} |')
    return lines


def zero_sentence(paired: Dict[str, Dict[str, Dict]]) -> str:
    """Which differences' 95% intervals include zero and which exclude it, in words."""
    groups: Dict[Optional[bool], List[str]] = {True: [], False: [], None: []}
    for variant, by_metric in paired.items():
        for metric, summary in by_metric.items():
            groups[summary['includes_zero']].append(f'{variant} {LABELS.get(metric, metric)}')
    parts = [f'{title}: {"; ".join(names) if names else "none"}.' for title, names in (
        ('Intervals that include zero (no difference shown at this number of seeds)', groups[True]),
        ('Intervals that exclude zero', groups[False]))]
    if groups[None]:
        parts.append(f'No interval (one seed): {"; ".join(groups[None])}.')
    return ' '.join(parts)


def gap_table(overfitting: Dict[str, Dict[str, List[float]]]) -> List[str]:
    """Markdown rows: per FGVC variant, fused top-1 on train and test and the gap, mean ± std over seeds."""
    lines = ['| variant | train fused top-1 | test fused top-1 | gap (train − test) |', '|---|---|---|---|']
    for variant, values in overfitting.items():
        lines.append(f'| {variant} | {mean_std(values["train"])} | {mean_std(values["test"])} | '
                     f'{mean_std(values["gap"])} |')
    return lines


def gap_lines(overfitting: Dict[str, Dict[str, List[float]]]) -> List[str]:
    """SA + PWCA's mean gap against SA only's, in words (no lines unless both ran)."""
    if not {'SA only', 'SA + PWCA'} <= set(overfitting):
        return []
    sa, pwca = (statistics.fmean(overfitting[variant]['gap']) for variant in ('SA only', 'SA + PWCA'))
    return [f'Mean gap: SA only {sa:.1f} points, SA + PWCA {pwca:.1f} points; PWCA changes the gap by '
            f'{pwca - sa:+.1f} points.', '']


DIAGNOSTIC_COLUMNS = (  # (label, where in a run's diagnostics, key, digits)
    ('CE SA', 'last_epoch', 'ce_sa', 2), ('triplet SA', 'last_epoch', 'triplet_sa', 2),
    ('CE PWCA', 'last_epoch', 'ce_pwca', 2), ('triplet PWCA', 'last_epoch', 'triplet_pwca', 2),
    ('w_sa', 'weights', 'w_sa', 2), ('w_glca', 'weights', 'w_glca', 2), ('w_pwca', 'weights', 'w_pwca', 2),
    ('same-id partners', 'last_epoch', 'same_id_partners', 3), ('expected', 'last_epoch', 'same_id_expected', 3),
    ('Δ batch mean', 'last_epoch', 'batch_mean_gap', 3), ('Δ batch std', 'last_epoch', 'batch_std_gap', 3),
    ('SA batch std', 'last_epoch', 'sa_batch_std', 3))


def diagnostics_table(runs: Dict[str, Dict[str, List[Dict]]]) -> List[str]:
    """Markdown rows: per Re-ID variant, the last epoch's diagnostics and the final weights, mean ± std over seeds."""
    lines = ['| variant | ' + ' | '.join(label for label, *_ in DIAGNOSTIC_COLUMNS) + ' |',
             '|---|' + '---|' * len(DIAGNOSTIC_COLUMNS)]
    for variant, by_task in runs.items():
        diagnostics = [record['diagnostics'] for record in by_task.get('reid', [])]
        if diagnostics:
            cells = [mean_std([d[part][key] for d in diagnostics], digits) if key in diagnostics[0][part] else '–'
                     for _, part, key, digits in DIAGNOSTIC_COLUMNS]
            lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return lines


def branch_sections(result: Dict) -> List[str]:
    """The per-variant tables of the final epoch, one per task that ran."""
    runs, setup = result['runs'], result['setup']
    lines = []
    if 'fgvc' in setup['tasks']:
        lines += [f'## FGVC: digits-CUB (10 classes, chance 10%), top-1 (%) after {setup["fgvc_epochs"]} epochs',
                  f'`{setup["fgvc_config"]}` with the variant\'s switches; data {setup["fgvc_data"]}; '
                  f'seeds {setup["seeds"]["fgvc"]}.', '', *table(runs, 'fgvc', ('sa', 'glca', 'fused')), '']
    if 'reid' in setup['tasks']:
        lines += [f'## Re-ID: digits-VeRi-776 (50 test identities), after {setup["reid_epochs"]} epochs',
                  f'`{setup["reid_config"]}` with the variant\'s switches; data {setup["reid_data"]}; '
                  f'seeds {setup["seeds"]["reid"]}. Without GLCA the retrieval feature is SA\'s.', '',
                  *table(runs, 'reid', ('SA mAP', 'SA R1', 'GLCA mAP', 'GLCA R1', 'SA+GLCA mAP', 'SA+GLCA R1')), '']
    return lines


def paired_sections(result: Dict) -> List[str]:
    """Per task: the paired rollout vs random table of the models with GLCA, and which intervals include zero."""
    lines = []
    for task, paired in result['paired'].items():
        if paired:
            lines += [f'## {TASK_TITLES[task]}: rollout vs random queries on the same trained models',
                      'Each cell: the final model tested with rollout queries / with random queries (torch seeded '
                      f'with {result["setup"]["eval_seed"]}). Mean difference rollout − random over seeds, '
                      '95% Student-t interval '
                      '(n − 1 degrees of freedom).', '', *paired_table(paired, result['setup']['seeds'][task]), '',
                      zero_sentence(paired), '']
    return lines


def write_report(result: Dict, out_dir: Path) -> None:
    """``ablation.md`` (tables) and ``ablation.png`` (mean curves with a ±std band per variant)."""
    runs, setup = result['runs'], result['setup']
    lines = [
        '# Ablation of DCAL\'s branches and of GLCA\'s queries on the built-in digits data',
        '',
        f'Written by `{setup["command"]}` on {setup["device"]}; its runs took {setup["run_minutes"]:.0f} min of '
        f'training and evaluation (this call {setup["minutes"]:.0f} min: runs finished by an earlier call are kept), '
        'the same budget for every variant. Every model is fine-tuned from the built-in pretrained ViT '
        f'(`{setup["pretrained"]}`, trained on which two digits a canvas shows; the from-scratch ablation of before '
        'is [ablation_from_scratch/ablation.md](ablation_from_scratch/ablation.md)). Mean ± std over seeds of the '
        'final epoch. **Small generated data: these are not paper numbers.**', '', f'What was cut: {setup["cut"]}', '',
        *branch_sections(result), *against_baseline_sections(result['against_sa_only']), *paired_sections(result)]
    if result['overfitting']:
        lines += ['## FGVC: over-fitting, fused top-1 (%) on the train and test splits',
                  'The final model on the train split through the test pipeline (no augmentation), with its own '
                  'queries.', '', *gap_table(result['overfitting']), '',
                  *gap_lines(result['overfitting'])]
    if 'reid' in setup['tasks']:
        lines += ['## Re-ID: training diagnostics (means over the steps of the last epoch; weights at the end)',
                  'CE / triplet: each branch\'s unweighted losses; w = exp(−log_var) of the uncertainty weighting; '
                  'same-id partners: share of PWCA partners with the image\'s identity (expected: its mean over '
                  'the batch of (images of that identity − 1) / (B − 1)); Δ batch mean / std: mean over channels '
                  'of |PWCA − SA| of the per-channel batch mean / std of the features entering BNNeck.', '',
                  *diagnostics_table(runs), '']
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
        if any(by_task.get(task) for by_task in runs.values())]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, (task, title) in zip(axes[0], panels):
        for variant, by_task in runs.items():
            curves = [record['curve'] for record in by_task.get(task, [])]
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
