"""The crash suite, MMPretrain: real training processes killed at a random iteration and halfway through a checkpoint
write (tests/crash_driver.py), then resumed with --resume; each ends with the uninterrupted run's weights, bit for bit,
and keeps its best checkpoint."""
import pytest

from tests.crash_driver import EPOCHS, KILLED, assert_same_weights, drive, final_weights, random_iteration

pytestmark = pytest.mark.slow  # training subprocesses killed and resumed

PER_EPOCH = 5  # 40 digits, batch 8
FAULTS = {
    'kill -9 at a random iteration': f'iteration:{random_iteration(PER_EPOCH)}',
    'killed re-writing epoch_1.pth after its new best': 'resave:1',
    'killed writing the best checkpoint': 'best:1',
}


@pytest.fixture(scope='module')
def straight(digits_roots, tmp_path_factory):
    work = tmp_path_factory.mktemp('straight')
    code, log = drive('mmpretrain', work, digits_roots['cub'])
    assert code == 0, log[-3000:]
    return work


@pytest.mark.parametrize('fault', FAULTS.values(), ids=FAULTS.keys())
def test_a_killed_run_resumes_to_the_uninterrupted_end(straight, digits_roots, tmp_path, fault):
    work = tmp_path / 'work'
    code, log = drive('mmpretrain', work, digits_roots['cub'], '--fault', fault)
    assert code in KILLED, f'the run was not killed ({code}): {log[-2000:]}'
    code, log = drive('mmpretrain', work, digits_roots['cub'], '--resume')
    assert code == 0, log[-3000:]
    assert_same_weights(final_weights(work / f'epoch_{EPOCHS}.pth'), final_weights(straight / f'epoch_{EPOCHS}.pth'))
    [best] = [path.name for path in work.glob('best_*.pth')]
    [want] = [path.name for path in straight.glob('best_*.pth')]
    assert best == want
    assert_same_weights(final_weights(work / best), final_weights(straight / want))
    assert (work / 'last_checkpoint').read_text() == str(work / f'epoch_{EPOCHS}.pth')
