"""Small training runs of either toolbox that die at a chosen moment, as a killed job dies (the crash suites).

    python tests/crash_driver.py {mmpretrain,torchreid} WORK_DIR DATA_ROOT EPOCHS [--resume] [--fault KIND:AT]

Run by tests/{mmpretrain,torchreid}/test_crash_resume.py through :func:`drive`. Faults: ``iteration:K`` kill -9 right
after training iteration K (1-based, counted over the run); ``resave:E``
(mmpretrain) die halfway through re-writing ``epoch_E.pth`` after epoch E's new best; ``best:E`` (mmpretrain) die
halfway through writing epoch E's best checkpoint; ``write:E`` (torchreid) die halfway through writing
``model.pth.tar-E``. Dying halfway is real: the file size limit (RLIMIT_FSIZE) is set to half the file about to be
written, and SIGXFSZ, which Python ignores, is given back its default action: the kernel kills the process mid-write.
"""
import argparse
import os
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Tuple

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
KILLED = (-signal.SIGKILL, -signal.SIGXFSZ)  # the return codes of a process the kernel killed


def random_iteration(per_epoch: int) -> int:
    """An iteration after the first epoch's checkpoint and before the run's end, drawn once (seed 24), reproducibly."""
    return random.Random(24).randrange(per_epoch + 1, per_epoch * EPOCHS)


def die_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_when_a_file_grows_past(size: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def weight_bytes(model) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


def mmpretrain_run(work_dir: Path, data_root: Path, epochs: int, resume: bool, kind: str, at: int) -> None:
    from mmengine.hooks import Hook
    from mmengine.registry import RUNNERS
    from mmpretrain.registry import HOOKS

    from tests.mmpretrain.conftest import small_config

    @HOOKS.register_module(force=True)
    class FaultHook(Hook):
        priority = 'LOW'  # after_val_epoch before the checkpoint hook's (VERY_LOW): before the best and the re-write

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if kind == 'iteration' and runner.iter + 1 == at:
                die_now()

        def after_val_epoch(self, runner, metrics=None) -> None:
            if runner.epoch != at:
                return
            if kind == 'resave':  # the best (weights only) fits under half of the full checkpoint; its re-write not
                die_when_a_file_grows_past(os.path.getsize(work_dir / f'epoch_{at}.pth') // 2)
            elif kind == 'best':
                die_when_a_file_grows_past(weight_bytes(runner.model) // 2)

    cfg = small_config(data_root, work_dir, max_epochs=epochs)
    cfg.resume = resume
    cfg.custom_hooks.append(dict(type='FaultHook'))
    RUNNERS.build(cfg).train()


def torchreid_run(save_dir: Path, data_root: Path, epochs: int, resume: bool, kind: str, at: int) -> None:
    import torchreid

    import dcal_plugin.torchreid as dcal_torchreid
    from dcal_plugin.torchreid import DCALEngine
    from tests.torchreid.helpers import tiny_config

    forward_backward, save_model = DCALEngine.forward_backward, DCALEngine.save_model

    def faulty_forward_backward(engine, data):
        result = forward_backward(engine, data)
        if kind == 'iteration' and engine.epoch * engine.num_batches + engine.batch_idx + 1 == at:
            die_now()
        return result

    def faulty_save_model(engine, epoch, rank1, directory, is_best=False):
        if kind == 'write' and epoch + 1 == at:
            die_when_a_file_grows_past(weight_bytes(engine.dcal_reid) // 2)
        return save_model(engine, epoch, rank1, directory, is_best=is_best)

    DCALEngine.forward_backward, DCALEngine.save_model = faulty_forward_backward, faulty_save_model
    cfg = tiny_config(data_root, 'veri776', save_dir, 'train.max_epoch', epochs, 'test.eval_freq', 1,
                      'model.resume', 'auto' if resume else '')
    torchreid.utils.set_random_seed(cfg.train.seed)
    dcal_torchreid.run(cfg)


def drive(toolbox: str, work_dir: Path, data_root: Path, *options: str) -> Tuple[int, str]:
    """Run this script in a fresh process (one thread); its return code (negative: the signal that killed it) and
    output."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, toolbox, str(work_dir), str(data_root), str(EPOCHS), *options],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def final_weights(path: Path) -> Dict[str, 'torch.Tensor']:
    """The state_dict of a checkpoint of either toolbox."""
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def assert_same_weights(got: Dict, want: Dict) -> None:
    """Every tensor equal, bit for bit."""
    import torch
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('toolbox', choices=['mmpretrain', 'torchreid'])
    parser.add_argument('work_dir', type=Path)
    parser.add_argument('data_root', type=Path)
    parser.add_argument('epochs', type=int)
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--fault', default='none:0')
    args = parser.parse_args()
    kind, at = args.fault.split(':')
    run = mmpretrain_run if args.toolbox == 'mmpretrain' else torchreid_run
    run(args.work_dir, args.data_root, args.epochs, args.resume, kind, int(at))


if __name__ == '__main__':
    sys.path[0] = str(REPO)  # not tests/, whose mmpretrain/ and torchreid/ would hide the toolboxes
    main()
