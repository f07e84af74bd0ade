"""The crash suite, torchreid: real training processes killed at a random step and halfway through writing a
checkpoint (tests/crash_driver.py), then resumed with model.resume auto; each ends with the uninterrupted run's
weights, bit for bit."""
import pytest

from tests.crash_driver import EPOCHS, KILLED, assert_same_weights, drive, final_weights, random_iteration

pytest.importorskip('torchreid')

pytestmark = pytest.mark.slow  # training subprocesses killed and resumed

PER_EPOCH = 3  # 6 ids x 4 images, batch 8
FAULTS = {
    'kill -9 at a random iteration': f'iteration:{random_iteration(PER_EPOCH)}',
    'killed writing model.pth.tar-2': 'write:2',
}


@pytest.fixture(scope='module')
def straight(veri_data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp('straight_reid')
    code, log = drive('torchreid', save_dir, veri_data.root)
    assert code == 0, log[-3000:]
    return save_dir / 'model'


@pytest.mark.parametrize('fault', FAULTS.values(), ids=FAULTS.keys())
def test_a_killed_run_resumes_to_the_uninterrupted_end(straight, veri_data, tmp_path, fault):
    code, log = drive('torchreid', tmp_path / 'log', veri_data.root, '--fault', fault)
    assert code in KILLED, f'the run was not killed ({code}): {log[-2000:]}'
    code, log = drive('torchreid', tmp_path / 'log', veri_data.root, '--resume')
    assert code == 0, log[-3000:]
    assert 'Resuming from' in log
    name = f'model.pth.tar-{EPOCHS}'
    assert_same_weights(final_weights(tmp_path / 'log' / 'model' / name), final_weights(straight / name))
