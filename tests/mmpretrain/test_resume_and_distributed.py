"""Resume repeats the uninterrupted run; two gloo processes through tools/dist_train.sh end with identical weights."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmpretrain.registry import HOOKS

from .conftest import REPO, small_config


pytestmark = pytest.mark.slow  # training runs, two gloo processes

class Interrupted(Exception):
    """Stands for a run killed after its epoch-1 checkpoint was written."""


@HOOKS.register_module(force=True)
class InterruptAfterFirstEpochHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook has written epoch_1.pth

    def after_train_epoch(self, runner) -> None:
        if runner.epoch == 0:  # the loop counts epochs from 0 and increments after this hook
            raise Interrupted


def epoch_losses(work_dir, epoch):
    path = sorted(work_dir.glob('*/vis_data/scalars.json'))[-1]  # the latest run (a resume starts a new log)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [row['loss'] for row in rows if 'loss' in row and row['epoch'] == epoch]


def test_resumed_run_ends_like_the_uninterrupted_one(digits_roots, tmp_path):
    root = digits_roots['cub']
    straight = RUNNERS.build(small_config(root, tmp_path / 'straight', max_epochs=2))
    straight.train()

    cfg = small_config(root, tmp_path / 'resumed', max_epochs=2)
    cfg.custom_hooks.append(dict(type='InterruptAfterFirstEpochHook'))
    with pytest.raises(Interrupted):
        RUNNERS.build(cfg).train()
    assert (tmp_path / 'resumed' / 'epoch_1.pth').is_file() and not (tmp_path / 'resumed' / 'epoch_2.pth').exists()

    cfg = small_config(root, tmp_path / 'resumed', max_epochs=2)
    cfg.resume = True  # auto: the latest checkpoint in the work dir
    resumed = RUNNERS.build(cfg)
    resumed.train()

    assert resumed.epoch == 2
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    assert epoch_losses(tmp_path / 'resumed', 2) == pytest.approx(epoch_losses(tmp_path / 'straight', 2), abs=1e-6)
    assert len(epoch_losses(tmp_path / 'straight', 2)) == 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# DCAL's switches, each set on the command line as a user would; every variant must have no unused parameter
# (DDP without find_unused_parameters stops at the second iteration otherwise)
SWITCHES = {
    'default': [],
    'without GLCA': ['model.backbone.use_glca=False'],
    'without PWCA': ['model.backbone.use_pwca=False'],
    'random queries': ['model.backbone.query_selection=random'],
    'checkpointing': ['model.backbone.with_cp=True'],
}


def train_on_two_gloo_processes(cfg, tmp_path, switches=()) -> tuple:
    """Train ``cfg`` for one epoch with ``tools/dist_train.sh`` on 2 gloo processes; each rank's final state_dict."""
    cfg.custom_imports = dict(imports=['dcal_plugin.mmpretrain', 'tests.mmpretrain.rank_weights_hook'],
                              allow_failed_imports=False)
    cfg.custom_hooks.append(dict(type='RankWeightsHook'))
    config_file = tmp_path / 'ddp_config.py'
    cfg.dump(str(config_file))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PYTHON=sys.executable, PORT=str(free_port()))
    command = [str(REPO / 'tools' / 'dist_train.sh'), str(config_file), '2', '--work-dir', str(tmp_path / 'work')]
    if switches:
        command += ['--cfg-options', *switches]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [torch.load(tmp_path / 'work' / f'rank{rank}_weights.pth') for rank in (0, 1)]
    assert [r['world_size'] for r in records] == [2, 2]
    assert [r['iter'] for r in records] == [3, 3]  # 40 images, 20 per rank, batch 8
    rank0, rank1 = (r['state_dict'] for r in records)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    return rank0, rank1


@pytest.mark.parametrize('switches', SWITCHES.values(), ids=SWITCHES.keys())
def test_two_gloo_processes_end_with_identical_weights(digits_roots, tmp_path, switches):
    rank0, _ = train_on_two_gloo_processes(small_config(digits_roots['cub'], tmp_path / 'work'), tmp_path, switches)
    assert any('glca' in key for key in rank0) == ('model.backbone.use_glca=False' not in switches)
    initial = RUNNERS.build(small_config(digits_roots['cub'], tmp_path / 'init')).model.state_dict()
    assert not torch.equal(rank0['head.sa_fc.weight'], initial['head.sa_fc.weight'])  # it did train
