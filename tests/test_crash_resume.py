"""The crash suite: real training processes of both toolboxes killed at a random step and halfway through a
checkpoint write, then resumed; each resumed run ends with the uninterrupted run's weights, bit for bit, and
MMPretrain's keeps its best checkpoint."""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
MMPRETRAIN_PER_EPOCH = 5  # 40 digits, batch 8
TORCHREID_PER_EPOCH = 3  # 6 ids x 4 images, batch 8
RANDOM = random.Random(24)  # a kill after the first epoch's checkpoint, at an iteration drawn once, reproducibly
KILLED = (-signal.SIGKILL, -signal.SIGXFSZ)
pytestmark = pytest.mark.filterwarnings('ignore')


def drive(toolbox, work_dir, data_root, *options):
    """Run tests/crash_driver.py in a fresh process; its return code (negative: the signal that killed it)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'crash_driver.py'), toolbox, str(work_dir),
                           str(data_root), str(EPOCHS), *options], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def assert_same_weights(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.fixture(scope='module')
def mmpretrain_straight(digits_roots, tmp_path_factory):
    pytest.importorskip('mmpretrain')
    work = tmp_path_factory.mktemp('straight')
    code, log = drive('mmpretrain', work, digits_roots['cub'])
    assert code == 0, log[-3000:]
    return work


@pytest.fixture(scope='session')
def digits_roots(tmp_path_factory):
    from tests.mmpretrain.conftest import DATASETS, make_demo_data
    base = tmp_path_factory.mktemp('crash_digits')
    return {layout: make_demo_data(base, layout, seed=0, image_size=32, train_per_class=4, test_per_class=2)
            for layout in DATASETS}


MMPRETRAIN_FAULTS = {
    'kill -9 at a random iteration':
        f'iteration:{RANDOM.randrange(MMPRETRAIN_PER_EPOCH + 1, MMPRETRAIN_PER_EPOCH * EPOCHS)}',
    'killed re-writing epoch_1.pth after its new best': 'resave:1',
    'killed writing the best checkpoint': 'best:1',
}


@pytest.mark.parametrize('fault', MMPRETRAIN_FAULTS.values(), ids=MMPRETRAIN_FAULTS.keys())
def test_mmpretrain_resumes_a_killed_run_to_the_uninterrupted_end(mmpretrain_straight, digits_roots, tmp_path, fault):
    work = tmp_path / 'work'
    code, log = drive('mmpretrain', work, digits_roots['cub'], '--fault', fault)
    assert code in KILLED, f'the run was not killed ({code}): {log[-2000:]}'
    code, log = drive('mmpretrain', work, digits_roots['cub'], '--resume')
    assert code == 0, log[-3000:]
    assert_same_weights(weights(work / f'epoch_{EPOCHS}.pth'), weights(mmpretrain_straight / f'epoch_{EPOCHS}.pth'))
    [best] = [path.name for path in work.glob('best_*.pth')]
    [want] = [path.name for path in mmpretrain_straight.glob('best_*.pth')]
    assert best == want
    assert_same_weights(weights(work / best), weights(mmpretrain_straight / want))
    assert (work / 'last_checkpoint').read_text() == str(work / f'epoch_{EPOCHS}.pth')


@pytest.fixture(scope='module')
def veri_root(tmp_path_factory):
    pytest.importorskip('torchreid')
    from tests.torchreid.conftest import TINY_DATA, build_demo_data
    return build_demo_data(tmp_path_factory.mktemp('crash_veri'), 'veri776', **TINY_DATA).root


@pytest.fixture(scope='module')
def torchreid_straight(veri_root, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp('straight_reid')
    code, log = drive('torchreid', save_dir, veri_root)
    assert code == 0, log[-3000:]
    return save_dir / 'model'


TORCHREID_FAULTS = {
    'kill -9 at a random iteration':
        f'iteration:{RANDOM.randrange(TORCHREID_PER_EPOCH + 1, TORCHREID_PER_EPOCH * EPOCHS)}',
    'killed writing model.pth.tar-2': 'write:2',
}


@pytest.mark.parametrize('fault', TORCHREID_FAULTS.values(), ids=TORCHREID_FAULTS.keys())
def test_torchreid_resumes_a_killed_run_to_the_uninterrupted_end(torchreid_straight, veri_root, tmp_path, fault):
    code, log = drive('torchreid', tmp_path / 'log', veri_root, '--fault', fault)
    assert code in KILLED, f'the run was not killed ({code}): {log[-2000:]}'
    code, log = drive('torchreid', tmp_path / 'log', veri_root, '--resume')
    assert code == 0, log[-3000:]
    assert 'Resuming from' in log
    name = f'model.pth.tar-{EPOCHS}'
    assert_same_weights(weights(tmp_path / 'log' / 'model' / name), weights(torchreid_straight / name))
