"""tools/ablation.py at a tiny scale: every run goes through the real Runner / torchreid engine, the report matches the runs."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmpretrain')
pytest.importorskip('torchreid')

ROOT = Path(__file__).resolve().parents[1]


def test_ablation_writes_tables_and_curves_from_its_runs(tmp_path):
    out = tmp_path / 'docs'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'ablation.py'), '--out-dir', str(out), '--work-dir', str(tmp_path / 'w'),
         '--scale', '0.02', '--seeds', '0', '1', '--variants', 'SA only', 'DCAL (SA + GLCA + PWCA)'],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('] fgvc |') == 4 and proc.stdout.count('] reid |') == 4  # one progress line per run
    result = json.loads((out / 'ablation.json').read_text())
    sa_only, dcal = result['runs']['SA only'], result['runs']['DCAL (SA + GLCA + PWCA)']
    assert 'glca' not in sa_only['fgvc'][0] and {'sa', 'glca', 'fused'} <= set(dcal['fgvc'][0])
    assert set(sa_only['reid'][0]) == {'epoch', 'SA mAP', 'SA R1'}
    assert {'GLCA mAP', 'SA+GLCA mAP', 'SA+GLCA R1'} <= set(dcal['reid'][0])
    report = (out / 'ablation.md').read_text()
    checked_spread = 0
    for task, columns in (('fgvc', ('sa', 'glca', 'fused')), ('reid', ('SA mAP', 'SA R1'))):
        for variant, by_task in result['runs'].items():
            line = next(line for line in report.split(f'## {"FGVC" if task == "fgvc" else "Re-ID"}')[1].splitlines()
                        if line.startswith(f'| {variant} |'))
            for column in columns:
                if column not in by_task[task][0]:
                    continue
                finals = [curve[column][-1] for curve in by_task[task]]
                assert f'{statistics.mean(finals):.1f} ± {statistics.stdev(finals):.1f}' in line, (variant, column)
                checked_spread += statistics.stdev(finals) > 0.05
    assert checked_spread > 0  # the sample std over seeds is checked on a cell where the seeds differ
    for curve in dcal['fgvc'] + sa_only['fgvc']:
        assert all(0 <= value <= 100 for value in curve['fused'])
    assert 'not paper numbers' in report
    assert (out / 'ablation.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
