"""benchmarks/compare_runs.py: medians and ranges of several speed runs per tree, read from the result files."""
import json

import pytest

from benchmarks import compare_runs


def write_run(path, eval_time, train_time):
    rows = [dict(model='deit_tiny_patch16_224', img_size=448,
                 ratios=dict(eval_time=eval_time, sa_only_time=1.0, train_time=train_time, train_memory=2.0))]
    path.write_text(json.dumps(dict(rows=rows)))


def test_each_tree_gets_the_median_and_range_of_its_runs(tmp_path):
    for tree, evals in (('before', (1.30, 1.10, 1.20)), ('after', (0.90, 1.00, 1.40))):
        for run, value in enumerate(evals):
            write_run(tmp_path / f'speed_{tree}_run{run}.json', value, 2.0 + run / 10)
    out = tmp_path / 'table.md'
    table = compare_runs.main([f'before={tmp_path}/speed_before_run*.json', f'after={tmp_path}/speed_after_run*.json',
                               '--out', str(out)])
    [eval_row] = [line for line in table.splitlines() if '| eval t |' in line]
    assert eval_row == '| deit_tiny_patch16_224 | 448 | eval t | 1.20 (1.10–1.30) | 1.00 (0.90–1.40) |'
    [train_row] = [line for line in table.splitlines() if '| train t |' in line]
    assert train_row.endswith('| 2.10 (2.00–2.20) | 2.10 (2.00–2.20) |')
    assert 'before: 3 runs, after: 3 runs' in table and table in out.read_text()


def test_a_pattern_without_files_is_refused(tmp_path):
    with pytest.raises(SystemExit, match='no result file matches'):
        compare_runs.main([f'x={tmp_path}/none*.json'])
    with pytest.raises(SystemExit, match='LABEL=GLOB'):
        compare_runs.main([f'{tmp_path}/none*.json'])
