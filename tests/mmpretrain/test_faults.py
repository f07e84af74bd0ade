"""Faults of long MMPretrain runs, met as a user meets them: bad data, wrong settings and files, divergence, a full
disk, two runs in one work dir. Each fails before the first iteration or names what went wrong, and never leaves a
checkpoint that is partial or holds a diverged state."""
import errno
import shutil
import subprocess
import sys

import pytest
import torch
from mmengine.registry import RUNNERS
from mmpretrain.datasets import CUB
from mmpretrain.registry import TRANSFORMS

from dcal_plugin import atomic_file
from dcal_plugin.atomic_file import DiskFullError
from dcal_plugin.core import NonFiniteStateError
from dcal_plugin.core.checkpoint_file import CheckpointFileError
from dcal_plugin.image_check import CorruptImageError
from dcal_plugin.work_dir_lock import WorkDirBusyError

from tests.lock_holder import held_by_another_process

from .conftest import REPO, small_config

ITERATIONS_PER_EPOCH = 5  # 40 train images, batch 8


@pytest.fixture
def cub_copy(digits_roots, tmp_path):
    root = tmp_path / 'cub'
    shutil.copytree(digits_roots['cub'], root)
    return root


def train_images(root):
    dataset = CUB(data_root=str(root), split='train')
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def train(cfg):
    runner = RUNNERS.build(cfg)
    runner.train()
    return runner


def started_iterations(work_dir):
    """The iterations the latest run in ``work_dir`` logged (one per iteration: the logger's interval is 1)."""
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    return [line for line in logs[-1].read_text().splitlines() if '"loss"' in line] if logs else []


def test_corrupt_images_fail_before_the_first_iteration_naming_them(cub_copy, tmp_path):
    images = train_images(cub_copy)
    open(images[3], 'wb').close()  # zero bytes
    data = open(images[7], 'rb').read()
    open(images[7], 'wb').write(data[:len(data) // 2])  # cut short
    with pytest.raises(CorruptImageError, match=rf'CUB at .*: 2 listed image\(s\) cannot be read: {images[3]}: empty '
                                                rf'\(0 bytes\); {images[7]}: JPEG cut short'):
        train(small_config(cub_copy, tmp_path / 'work'))
    assert not started_iterations(tmp_path / 'work')


def test_a_corrupt_image_met_during_training_is_named(tmp_path):
    empty = tmp_path / 'img_0001.jpg'
    empty.write_bytes(b'')
    loader = TRANSFORMS.build(dict(type='DCALLoadImageFromFile'))
    with pytest.raises(CorruptImageError, match=rf'cannot read image {empty}: empty \(0 bytes\)'):
        loader(dict(img_path=str(empty)))


@pytest.mark.parametrize('num_classes', [5, 20])
def test_num_classes_that_does_not_fit_the_data_fails_at_start(digits_roots, tmp_path, num_classes):
    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    cfg.model.head.num_classes = num_classes
    with pytest.raises(ValueError, match=rf'the head has num_classes={num_classes} but the training set CUB has '
                                         r'labels 0..9 \(10 classes, 10 of them with images\): '
                                         r'set model.head.num_classes=10'):
        train(cfg)
    assert not started_iterations(tmp_path / 'work')


@pytest.mark.slow
def test_an_epoch_ending_in_one_image_is_refused_at_start(digits_roots, tmp_path):
    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    cfg.train_dataloader.batch_size = 13  # 40 = 3 x 13 + 1
    with pytest.raises(ValueError, match=r'each epoch would end in a batch of 1 image \(40 images per process, batch '
                                         r'13\).*drop_last=True'):
        train(cfg)
    assert not started_iterations(tmp_path / 'work')
    cfg = small_config(digits_roots['cub'], tmp_path / 'dropped')
    cfg.train_dataloader.update(batch_size=13, drop_last=True)
    assert train(cfg).iter == 3


def test_weights_that_diverge_on_an_epochs_last_step_are_never_saved(digits_roots, tmp_path):
    cfg = small_config(digits_roots['cub'], tmp_path / 'work', max_epochs=2)
    # the lr jumps at the last iteration of epoch 1: that step's loss is finite, the weights it leaves are not usable
    cfg.param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[ITERATIONS_PER_EPOCH - 1], gamma=1e35)]
    with pytest.raises(NonFiniteStateError, match=rf'training stopped at epoch 1, iteration {ITERATIONS_PER_EPOCH}: '
                                                  r'parameter .* holds (values of magnitude|NaN|inf)'):
        train(cfg)
    assert not list((tmp_path / 'work').glob('*.pth')) and not (tmp_path / 'work' / 'last_checkpoint').exists()


def test_a_full_disk_is_named_and_the_last_complete_checkpoint_stays_the_latest(digits_roots, tmp_path, monkeypatch):
    fsync = atomic_file.os.fsync
    written = []

    def fill_up(descriptor):  # the disk fills while epoch 2's checkpoint is written
        written.append(descriptor)
        if (tmp_path / 'work' / 'epoch_1.pth').exists() and any(
                path.name.startswith('.partial-epoch_2') for path in (tmp_path / 'work').iterdir()):
            raise OSError(errno.ENOSPC, 'No space left on device')
        fsync(descriptor)

    monkeypatch.setattr(atomic_file.os, 'fsync', fill_up)
    cfg = small_config(digits_roots['cub'], tmp_path / 'work', max_epochs=2)
    with pytest.raises(DiskFullError, match=r'no space left on the device to write .*epoch_2\.pth .*bytes free\); the '
                                            r'file was not changed, so the last complete checkpoint stays the latest'):
        train(cfg)
    work = tmp_path / 'work'
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    assert not (work / 'epoch_2.pth').exists() and not list(work.glob('.partial-*'))
    assert torch.load(work / 'epoch_1.pth', weights_only=True)['meta']['epoch'] == 1


@pytest.mark.slow
def test_a_second_run_into_a_busy_work_dir_is_refused(digits_roots, tmp_path):
    work = tmp_path / 'work'
    with held_by_another_process(work) as pid:  # stands for run A, training into work
        with pytest.raises(WorkDirBusyError, match=rf'another run \(process {pid}\) is writing into {work}'):
            train(small_config(digits_roots['cub'], work))
    assert not list(work.glob('*.pth'))
    assert train(small_config(digits_roots['cub'], work)).iter == ITERATIONS_PER_EPOCH  # free once A is gone


@pytest.fixture(scope='module')
def finished(digits_roots, tmp_path_factory):
    work = tmp_path_factory.mktemp('finished')
    train(small_config(digits_roots['cub'], work))
    return work


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['text', 'list', 'cut short', 'state_dict only'])
def test_resume_from_a_file_that_is_no_checkpoint_says_what_it_is(digits_roots, finished, tmp_path, kind):
    path = tmp_path / 'given.pth'
    if kind == 'text':
        path.write_text(str(finished / 'epoch_1.pth'))
        expected = r'is a text file, not a torch.save file'
    elif kind == 'list':
        torch.save([1, 2], path)
        expected = r'holds a list, not a dict'
    elif kind == 'cut short':
        path.write_bytes((finished / 'epoch_1.pth').read_bytes()[:5000])
        expected = r'is cut short'
    else:
        torch.save({'state_dict': torch.load(finished / 'epoch_1.pth', weights_only=True)['state_dict']}, path)
        expected = r"holds a dict without 'meta'"
    cfg = small_config(digits_roots['cub'], tmp_path / 'work', max_epochs=2)
    cfg.update(resume=True, load_from=str(path))
    with pytest.raises(CheckpointFileError, match=expected + r'.*expected a checkpoint of an mmengine run to resume'):
        train(cfg)


@pytest.mark.slow
def test_tools_test_refuses_a_checkpoint_of_another_architecture(digits_roots, finished, tmp_path):
    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    cfg.model.backbone.depth = 3  # another architecture than the checkpoint's 2 blocks
    cfg.dump(str(tmp_path / 'config.py'))
    proc = subprocess.run([sys.executable, 'tools/test.py', str(tmp_path / 'config.py'), str(finished / 'epoch_1.pth'),
                           '--work-dir', str(tmp_path / 'test')], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and 'DCAL test top-1' not in proc.stdout
    assert "does not hold the weights of this config's model" in proc.stderr
    assert 'missing [' in proc.stderr and 'backbone.dcal.vit.blocks.2.' in proc.stderr
