"""tools/ablation.py at a tiny scale: every run goes through the real Runner / torchreid engine, the report matches the
runs."""
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmpretrain')
pytest.importorskip('torchreid')

ROOT = Path(__file__).resolve().parents[1]
PWCA, DCAL, RANDOM = 'SA + PWCA', 'DCAL (SA + GLCA + PWCA)', 'DCAL, random queries'
T_975 = {2: 12.706204736}  # Student t, 97.5% quantile, by number of seeds (n - 1 degrees of freedom)
LABELS = {'glca': 'GLCA top-1', 'fused': 'fused top-1'}


def call_ablation(out: Path, work_dir: Path, *args: str) -> str:
    """tools/ablation.py at scale 0.02 with ``args``: its stdout."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'ablation.py'), '--out-dir', str(out), '--work-dir', str(work_dir),
         '--scale', '0.02', *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def ablation(tmp_path_factory):
    """One tiny ablation: FGVC SA + PWCA, DCAL and DCAL with random queries; Re-ID the default cut of those; 2 seeds."""
    tmp_path = tmp_path_factory.mktemp('ablation')
    out = tmp_path / 'docs'
    stdout = call_ablation(out, tmp_path / 'w', '--seeds', '0', '1', '--variants', PWCA, DCAL, RANDOM)
    return stdout, json.loads((out / 'ablation.json').read_text()), (out / 'ablation.md').read_text(), out


def section(report: str, heading: str) -> str:
    """The report's text from the '## ' heading starting with ``heading`` to the next heading."""
    return report.split(f'\n## {heading}')[1].split('\n## ')[0]


def row(text: str, *cells: str) -> str:
    """The one table line of ``text`` starting with ``| cell | cell |``."""
    [line] = [line for line in text.splitlines() if line.startswith('| ' + ' | '.join(cells) + ' |')]
    return line


def mean_std(values, digits=1):
    return f'{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}'


@pytest.mark.slow  # the tool trains in a subprocess
def test_progress_lines_and_default_reid_cut(ablation):
    stdout, result, report, out = ablation
    lines = stdout.splitlines()
    for task, runs, paired in (('fgvc', 6, 4), ('reid', 4, 2)):  # Re-ID leaves out the random-query variant
        assert sum(f'] {task} |' in line and 'rollout vs random' not in line for line in lines) == runs
        assert sum(f'] {task} |' in line and 'rollout vs random queries:' in line for line in lines) == paired
    assert result['setup']['variants'] == {'fgvc': [PWCA, DCAL, RANDOM], 'reid': [PWCA, DCAL]}
    assert 'reid' not in result['runs'][RANDOM]
    assert 'What was cut: FGVC ran 2 seeds [0, 1], without SA only, SA + GLCA; Re-ID ran 2 seeds [0, 1], without ' \
           'SA only, SA + GLCA, DCAL, random queries.' in report
    assert 'not paper numbers' in report
    assert (out / 'ablation.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow  # the tool trains in a subprocess
def test_branch_tables_match_the_runs(ablation):
    _, result, report, _ = ablation
    pwca, dcal = result['runs'][PWCA], result['runs'][DCAL]
    assert 'glca' not in pwca['fgvc'][0]['curve'] and {'sa', 'glca', 'fused'} <= set(dcal['fgvc'][0]['curve'])
    assert set(pwca['reid'][0]['curve']) == {'epoch', 'SA mAP', 'SA R1'}
    assert {'GLCA mAP', 'SA+GLCA mAP', 'SA+GLCA R1'} <= set(dcal['reid'][0]['curve'])
    checked_spread = 0
    for task, heading, columns in (('fgvc', 'FGVC: digits', ('sa', 'glca', 'fused')),
                                   ('reid', 'Re-ID: digits', ('SA mAP', 'SA R1'))):
        for variant, by_task in result['runs'].items():
            if task not in by_task:
                continue
            line = row(section(report, heading), variant)
            for column in columns:
                if column in by_task[task][0]['curve']:
                    finals = [record['curve'][column][-1] for record in by_task[task]]
                    assert mean_std(finals) in line, (variant, column)
                    checked_spread += statistics.stdev(finals) > 0.05
    assert checked_spread > 0  # the sample std over seeds is checked on a cell where the seeds differ
    for record in dcal['fgvc'] + pwca['fgvc']:
        assert all(0 <= value <= 100 for value in record['curve']['fused'])


@pytest.mark.slow  # the tool trains in a subprocess
def test_paired_evaluation_uses_random_queries_on_the_same_model(ablation):
    _, result, _, _ = ablation
    differs = 0
    for task, sa_metric, glca_metrics in (('fgvc', 'sa', ('glca',)), ('reid', 'SA mAP', ('GLCA mAP', 'SA+GLCA mAP'))):
        for variant in (DCAL, RANDOM):
            for record in result['runs'][variant].get(task, []):
                rollout, random = record['paired']['rollout'], record['paired']['random']
                assert (rollout['query_selection'], random['query_selection']) == ('rollout', 'random')
                # SA does not depend on GLCA's queries; only float rounding differs (with rollout queries the SA
                # blocks compute their attention weights explicitly, with random ones through fused attention)
                assert rollout[sa_metric] == pytest.approx(random[sa_metric], abs=1.0)
                differs += any(rollout[metric] != random[metric] for metric in glca_metrics)
                assert record['test'] == record['paired'][record['query_selection']]
        for record in result['runs'][DCAL][task]:  # the rollout test repeats the training's own last test
            assert record['query_selection'] == 'rollout'
            for metric, value in record['test'].items():
                if metric in record['curve']:
                    # abs: mmpretrain's Accuracy is float32
                    assert value == pytest.approx(record['curve'][metric][-1], abs=1e-4), (task, metric)
    assert result['runs'][RANDOM]['fgvc'][0]['query_selection'] == 'random'
    assert differs > 0
    assert result['runs'][PWCA]['fgvc'][0]['paired'] is None


@pytest.mark.slow  # the tool trains in a subprocess
def test_paired_table_and_intervals_are_computed_from_the_seeds(ablation):
    _, result, report, _ = ablation
    metrics = {'fgvc': ('glca', 'fused'), 'reid': ('GLCA mAP', 'GLCA R1', 'SA+GLCA mAP', 'SA+GLCA R1')}
    variants = {'fgvc': (DCAL, RANDOM), 'reid': (DCAL,)}
    for task, title in (('fgvc', 'FGVC'), ('reid', 'Re-ID')):
        assert set(result['paired'][task]) == set(variants[task])
        text = section(report, f'{title}: rollout vs random')
        include, exclude = text.split('Intervals that include zero')[1].split('Intervals that exclude zero')
        for variant in variants[task]:
            records = result['runs'][variant][task]
            for metric in metrics[task]:
                rollout = [record['paired']['rollout'][metric] for record in records]
                random = [record['paired']['random'][metric] for record in records]
                difference = [a - b for a, b in zip(rollout, random)]
                mean = sum(difference) / len(difference)
                half = T_975[len(difference)] * statistics.stdev(difference) / math.sqrt(len(difference))
                summary = result['paired'][task][variant][metric]
                assert summary['rollout'] == rollout and summary['random'] == random
                assert summary['difference'] == pytest.approx(difference)
                assert summary['mean'] == pytest.approx(mean)
                assert (summary['low'], summary['high']) == pytest.approx((mean - half, mean + half))
                assert summary['includes_zero'] == (mean - half <= 0 <= mean + half)
                line = row(text, variant, LABELS.get(metric, metric))
                cells = [f'{a:.1f} / {b:.1f}' for a, b in zip(rollout, random)]
                assert line == (f'| {variant} | {LABELS.get(metric, metric)} | ' + ' | '.join(cells)
                                + f' | {mean:+.1f} | [{mean - half:+.1f}, {mean + half:+.1f}] |')
                name = f'{variant} {LABELS.get(metric, metric)}'
                assert (name in include, name in exclude) == ((True, False) if summary['includes_zero'] else
                                                              (False, True)), name


@pytest.mark.slow  # the tool trains in a subprocess
def test_train_test_gap_rows(ablation):
    _, result, report, _ = ablation
    text = section(report, 'FGVC: over-fitting')
    assert set(result['overfitting']) == {PWCA, DCAL, RANDOM}
    for variant, values in result['overfitting'].items():
        records = result['runs'][variant]['fgvc']
        train = [record['train']['fused'] for record in records]
        test = [record['test']['fused'] for record in records]
        assert values['train'] == train and values['test'] == test
        assert values['gap'] == pytest.approx([a - b for a, b in zip(train, test)])
        assert row(text, variant) == f'| {variant} | {mean_std(train)} | {mean_std(test)} | {mean_std(values["gap"])} |'
        assert all(record['train']['query_selection'] == record['query_selection'] for record in records)


@pytest.mark.slow  # the tool trains in a subprocess
def test_reid_pwca_diagnostics(ablation):
    _, result, report, _ = ablation
    text = section(report, 'Re-ID: training diagnostics')
    keys = {'ce_sa', 'triplet_sa', 'ce_pwca', 'triplet_pwca', 'same_id_partners', 'same_id_expected',
            'batch_mean_gap', 'batch_std_gap', 'sa_batch_std'}
    for variant, weights in ((PWCA, {'w_sa', 'w_pwca'}), (DCAL, {'w_sa', 'w_glca', 'w_pwca'})):
        diagnostics = [record['diagnostics'] for record in result['runs'][variant]['reid']]
        for run in diagnostics:
            assert keys <= set(run['last_epoch']) and set(run['weights']) == weights
            assert run['last_epoch'] == run['per_epoch'][-1] and run['last_epoch']['epoch'] == 1
            assert run['last_epoch']['same_id_expected'] == pytest.approx(3 / 31)  # 8 ids x 4 images a batch
            assert 0 <= run['last_epoch']['same_id_partners'] <= 1
            assert run['last_epoch']['batch_std_gap'] > 0 and all(w > 0 for w in run['weights'].values())
        line = row(text, variant)
        for part, key, digits in (('last_epoch', 'ce_pwca', 2), ('last_epoch', 'triplet_sa', 2),
                                  ('weights', 'w_pwca', 2), ('last_epoch', 'same_id_partners', 3),
                                  ('last_epoch', 'batch_mean_gap', 3)):
            assert mean_std([run[part][key] for run in diagnostics], digits) in line, key


@pytest.mark.slow  # the tool trains in a subprocess
def test_a_second_call_keeps_the_finished_runs_and_trains_the_rest_afresh(ablation):
    _, result, _, out = ablation
    again = out.parent / 'again'
    interrupted = out.parent / 'w' / 'fgvc' / 'SA+PWCA' / 'seed2' / '20260101_000000' / 'vis_data'
    interrupted.mkdir(parents=True)  # what a run killed mid-way leaves: mmengine's folder of a run without a record
    (interrupted / 'scalars.json').write_text('{"accuracy/top1": 0.0, "dcal/sa_top1": 0.0, "step": 1}\n')
    stdout = call_ablation(again, out.parent / 'w', '--seeds', '0', '1', '2', '--variants', PWCA, '--tasks', 'fgvc')
    lines = [line for line in stdout.splitlines() if '] fgvc | SA + PWCA | seed' in line]
    assert [' (kept from an earlier call)' in line for line in lines] == [True, True, False]
    second = json.loads((again / 'ablation.json').read_text())
    runs = second['runs'][PWCA]['fgvc']
    assert runs[:2] == result['runs'][PWCA]['fgvc'] and runs[2]['seed'] == 2
    assert second['setup']['run_minutes'] == pytest.approx(sum(run['seconds'] for run in runs) / 60)
    assert second['setup']['run_minutes'] > second['setup']['minutes'] - 1 / 60  # the kept runs' time is counted


def test_the_demo_schedule_stretches_and_drops_a_warm_up_shorter_than_an_iteration(tmp_path, monkeypatch):
    """10 demo epochs -> 20: warm-up and cosine twice as long; -> 1 epoch of 1 iteration: the 0.05-epoch warm-up
    goes."""
    from mmengine.config import Config

    from dcal_plugin.demo_data import make_demo_data
    monkeypatch.syspath_prepend(str(ROOT / 'tools'))
    import ablation
    root = make_demo_data(tmp_path, 'cub', image_size=32, train_per_class=1, test_per_class=1)
    cfg = Config.fromfile(str(ablation.FGVC_CONFIG))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(root)
    warmup, cosine = cfg.param_scheduler
    longer = ablation.stretched_schedule(cfg, 2 * cfg.train_cfg.max_epochs)
    assert ([s['end'] for s in longer] == [2 * warmup['end'], 2 * cosine['end']]
            and longer[1]['T_max'] == 2 * cosine['T_max'])
    [only] = ablation.stretched_schedule(cfg, 1)  # 10 images, batch 16: one iteration an epoch
    assert only['type'] == 'CosineAnnealingLR' and only['end'] == 1


def test_each_variant_against_sa_only_is_paired_by_seed():
    """Differences variant - SA only of the same seed (FGVC fused top-1; Re-ID the retrieval feature's), t interval."""
    from dcal_plugin import ablation_report
    runs = {'SA only': dict(fgvc=[dict(seed=0, test=dict(fused=50.0)), dict(seed=1, test=dict(fused=40.0))],
                            reid=[dict(seed=0, test={'SA mAP': 10.0, 'SA R1': 9.0})]),
            DCAL: dict(fgvc=[dict(seed=1, test=dict(fused=49.0)), dict(seed=0, test=dict(fused=53.0)),
                             dict(seed=7, test=dict(fused=99.0))],  # no SA-only run of seed 7: left out
                       reid=[dict(seed=0, test={'SA mAP': 1.0, 'SA R1': 1.0, 'SA+GLCA mAP': 14.0,
                                                'SA+GLCA R1': 12.0})])}
    summary = ablation_report.summarise_against_baseline(runs)
    fused = summary['fgvc'][DCAL]['fused']
    assert fused['seeds'] == [1, 0] and fused['difference'] == [9.0, 3.0] and fused['mean'] == 6.0
    assert fused['half_width'] == pytest.approx(T_975[2] * statistics.stdev([9.0, 3.0]) / math.sqrt(2))
    assert summary['reid'][DCAL]['mAP']['difference'] == [4.0] and summary['reid'][DCAL]['R1']['low'] is None
    assert 'SA only' not in summary['fgvc']


def test_the_localization_step_compares_the_first_seeds_dcal_and_sa_only_checkpoints(tmp_path, monkeypatch):
    """tools/ablation.py ends with tools/localization.py on the DCAL and SA-only FGVC models of one seed."""
    monkeypatch.syspath_prepend(str(ROOT / 'tools'))
    import ablation
    for folder in ('DCAL', 'SA_only', 'SA+GLCA'):
        for seed in (0, 3):
            run = tmp_path / 'fgvc' / folder / f'seed{seed}'
            run.mkdir(parents=True)
            (run / 'last_checkpoint').write_text(f'/ckpt/{folder}/{seed}.pth\n')
    command = ablation.localization_command(tmp_path, tmp_path / 'docs', 3)
    relative = ablation.parse_args(['--work-dir', 'w', '--out-dir', 'o'])  # the step runs in the repository's root
    assert relative.work_dir == Path('w').resolve() and relative.out_dir == Path('o').resolve()
    tool, config, model = command[1:4]
    assert (tool, config, model) == (str(ROOT / 'tools' / 'localization.py'), 'configs/dcal_deit-tiny_digits-cub.py',
                                     '/ckpt/DCAL/3.pth')
    assert command[command.index('--baseline') + 1] == '/ckpt/SA_only/3.pth'
    options = command[command.index('--baseline-cfg-options') + 1:command.index('--cfg-options')]
    assert options == ['model.backbone.use_glca=False', 'model.backbone.use_pwca=False']
    assert command[command.index('--cfg-options') + 1] == (
        f'test_dataloader.dataset.data_root={tmp_path / "data" / "CUB_200_2011"}')
