"""Faults of long torchreid runs, met as a user meets them: corrupt images, divergence on an epoch's last step, files
that are no checkpoints, a full disk, two runs in one save dir. Each fails before the first step or names what went
wrong, and never leaves a checkpoint that is partial or holds a diverged state."""
import errno

import pytest
import torch

torchreid = pytest.importorskip('torchreid')

import dcal_plugin.torchreid as dcal_torchreid  # noqa: E402
from dcal_plugin import atomic_file  # noqa: E402
from dcal_plugin.atomic_file import DiskFullError  # noqa: E402
from dcal_plugin.core import NonFiniteStateError  # noqa: E402
from dcal_plugin.core.checkpoint_file import CheckpointFileError  # noqa: E402
from dcal_plugin.image_check import CorruptImageError  # noqa: E402
from dcal_plugin.torchreid import build_engine, resume_from_checkpoint  # noqa: E402
from dcal_plugin.torchreid.checkpoint import load_weights  # noqa: E402
from dcal_plugin.torchreid.datasets import VeRi776  # noqa: E402
from dcal_plugin.torchreid.images import images_read_or_named  # noqa: E402
from dcal_plugin.work_dir_lock import WorkDirBusyError  # noqa: E402

from tests.lock_holder import held_by_another_process  # noqa: E402

from .helpers import tiny_config  # noqa: E402

RUN = dict(print_freq=1, ranks=[1])


def train_image(veri_folder, index=0):
    return sorted((veri_folder / 'image_train').iterdir())[index]


def test_a_zero_byte_train_image_fails_before_the_first_step_naming_it(veri_copy, tmp_path, capsys):
    broken = train_image(veri_copy, 5)
    broken.write_bytes(b'')
    engine = build_engine(tiny_config(veri_copy.parent, 'veri776', tmp_path / 'log'))
    with pytest.raises(CorruptImageError, match=rf'the Re-ID train set: 1 listed image\(s\) cannot be read: {broken}: '
                                                r'empty \(0 bytes\)'):
        engine.run(save_dir=str(tmp_path / 'log'), max_epoch=1, **RUN)
    assert 'epoch: [1/1]' not in capsys.readouterr().out


def test_an_image_that_breaks_during_training_is_named_not_retried_forever(veri_copy):
    dataset = VeRi776(root=str(veri_copy.parent), mode='train')
    path = dataset.train[0][0]
    open(path, 'wb').close()
    with images_read_or_named(), pytest.raises(CorruptImageError, match=rf'cannot read image {path}: empty'):
        dataset[0]
    assert torchreid.data.datasets.dataset.read_image is torchreid.utils.read_image  # torchreid's, after the run


def test_weights_that_diverge_on_an_epochs_last_step_are_never_saved(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.max_epoch', 2))
    step = engine.optimizer.step

    def spiking_step(*args, **kwargs):  # the last step of epoch 2 runs at an lr of 1e35: its loss was finite
        if engine.epoch == 1 and engine.batch_idx == engine.num_batches - 1:
            for group in engine.optimizer.param_groups:
                group['lr'] = 1e35
        return step(*args, **kwargs)

    engine.optimizer.step = spiking_step
    with pytest.raises(NonFiniteStateError, match=r'training stopped at epoch 2, iteration \d+: parameter .* holds'):
        engine.run(save_dir=str(tmp_path / 'run'), max_epoch=2, eval_freq=1, **RUN)
    model_dir = tmp_path / 'run' / 'model'
    assert sorted(path.name for path in model_dir.iterdir()) == ['last_checkpoint', 'model.pth.tar-1']
    assert (model_dir / 'last_checkpoint').read_text() == str(model_dir / 'model.pth.tar-1')


@pytest.fixture
def saved(veri_data, tmp_path):
    """An engine after one epoch, its checkpoint model.pth.tar-1."""
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    engine.run(save_dir=str(tmp_path / 'run'), max_epoch=1, **RUN)
    return engine, tmp_path / 'run' / 'model' / 'model.pth.tar-1'


@pytest.mark.parametrize('kind', ['text', 'list', 'cut short', 'weights only'])
def test_resume_and_load_weights_from_a_file_that_is_no_checkpoint_say_what_it_is(saved, tmp_path, kind):
    engine, checkpoint = saved
    path = tmp_path / 'given.pth.tar'
    if kind == 'text':
        path.write_text(str(checkpoint))
        expected = 'is a text file, not a torch.save file'
    elif kind == 'list':
        torch.save([1, 2], path)
        expected = 'holds a list, not a dict'
    elif kind == 'cut short':
        path.write_bytes(checkpoint.read_bytes()[:4000])
        expected = 'is cut short'
    else:
        torch.save({'state_dict': engine.model.state_dict()}, path)
        expected = "holds a dict without 'optimizer', 'scheduler', 'epoch'"
    with pytest.raises(CheckpointFileError, match=expected + '.*expected a torchreid checkpoint to resume'):
        resume_from_checkpoint(str(path), engine.model, engine.optimizer, engine.scheduler)
    if kind != 'weights only':
        with pytest.raises(CheckpointFileError, match=expected + '.*expected a torchreid checkpoint or a state_dict'):
            load_weights(engine.model, str(path))


def test_load_weights_of_another_architecture_is_refused_not_tested_at_random(saved, veri_data, tmp_path):
    _, checkpoint = saved
    other = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path / 'other', 'model.timm_kwargs.depth', 3))
    with pytest.raises(ValueError, match=r'does not hold weights of this DCALReID: missing \[\d+\]: '
                                         r'dcal\.vit\.blocks\.2\.'):
        load_weights(other.model, str(checkpoint))
    load_weights(saved[0].model, str(checkpoint))  # the same architecture loads


def test_a_full_disk_is_named_and_the_last_complete_checkpoint_stays_the_latest(veri_data, tmp_path, monkeypatch):
    fsync = atomic_file.os.fsync
    model_dir = tmp_path / 'run' / 'model'

    def fill_up(descriptor):
        if any(path.name.startswith('.partial-model.pth.tar-2') for path in model_dir.iterdir()):
            raise OSError(errno.ENOSPC, 'No space left on device')
        fsync(descriptor)

    monkeypatch.setattr(atomic_file.os, 'fsync', fill_up)
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.max_epoch', 2))
    with pytest.raises(DiskFullError, match=r'no space left on the device to write .*model.pth.tar-2 '):
        engine.run(save_dir=str(tmp_path / 'run'), max_epoch=2, eval_freq=1, **RUN)
    assert sorted(path.name for path in model_dir.iterdir()) == ['last_checkpoint', 'model.pth.tar-1']
    assert (model_dir / 'last_checkpoint').read_text() == str(model_dir / 'model.pth.tar-1')


def test_a_second_run_into_a_busy_save_dir_is_refused(veri_data, tmp_path):
    save_dir = tmp_path / 'log'
    with held_by_another_process(save_dir) as pid:
        cfg = tiny_config(veri_data.root, 'veri776', save_dir)
        with pytest.raises(WorkDirBusyError, match=rf'another run \(process {pid}\) is writing into {save_dir}'):
            dcal_torchreid.run(cfg)
    assert not (save_dir / 'model').exists()


def test_resume_auto_takes_the_latest_complete_checkpoint(veri_data, tmp_path, capsys):
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path / 'log', 'train.max_epoch', 1)
    dcal_torchreid.run(cfg)
    model_dir = tmp_path / 'log' / 'model'
    (model_dir / 'last_checkpoint').write_text(str(model_dir / 'model.pth.tar-7'))  # names a file that is gone
    capsys.readouterr()
    # model.pretrained True, torchreid's default: the checkpoint found gives the weights, timm's hub is never asked
    # (it would fail here: no network, and the tiny model is no timm weight's shape)
    dcal_torchreid.run(tiny_config(veri_data.root, 'veri776', tmp_path / 'log', 'train.max_epoch', 2,
                                   'model.resume', 'auto', 'model.pretrained', True))
    out = capsys.readouterr().out
    assert f'Weights: model.resume {model_dir / "model.pth.tar-1"}' in out
    assert f'Resuming from {model_dir / "model.pth.tar-1"}' in out and 'epoch: [2/2]' in out
    assert 'epoch: [1/2]' not in out
