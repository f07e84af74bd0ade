"""Files given as checkpoints that are not: the error says what the file is and what was expected."""
import pytest
import torch

from dcal_plugin.core.checkpoint import read_state_dict
from dcal_plugin.core.checkpoint_file import (
    CheckpointFileError, is_complete_checkpoint, latest_complete_checkpoint, load_checkpoint_file)


@pytest.fixture
def files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(64, 64)}, 'meta': {}}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_text('work_dirs/run/epoch_3.pth\n')
    torch.save([torch.ones(2)], tmp_path / 'list.pth')
    torch.save({'w': torch.ones(2), 'note': 'hi'}, tmp_path / 'mixed.pth')
    return tmp_path


@pytest.mark.parametrize('name, message', [
    ('cut.pth', r'cut\.pth is cut short \([\d,]+ bytes\): a torch.save archive whose end is missing'),
    ('empty.pth', r'empty\.pth is empty \(0 bytes\)'),
    ('text.pth', r"text\.pth is a text file, not a torch.save file \(it starts with 'work_dirs/run/epoch_3.pth"),
    ('list.pth', r'list\.pth holds a list, not a dict'),
])
def test_read_state_dict_says_what_the_file_is(files, name, message):
    with pytest.raises(CheckpointFileError, match=message + r'.*expected a state_dict'):
        read_state_dict(str(files / name))


def test_read_state_dict_refuses_entries_that_are_not_tensors(files):
    with pytest.raises(CheckpointFileError, match=r"entries that are not tensors \('note'\)"):
        read_state_dict(str(files / 'mixed.pth'))
    assert list(read_state_dict(str(files / 'good.pth'))) == ['w']


def test_load_checkpoint_file_names_missing_keys(files):
    with pytest.raises(CheckpointFileError, match=r"without 'optimizer' \(its keys: 'state_dict', 'meta'\); "
                                                  r'expected a resumable checkpoint'):
        load_checkpoint_file(str(files / 'good.pth'), 'a resumable checkpoint', ('state_dict', 'optimizer'))
    with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
        load_checkpoint_file(str(files / 'absent.pth'), 'x')


def test_the_latest_complete_checkpoint_skips_a_cut_short_one(files):
    assert is_complete_checkpoint(str(files / 'good.pth')) and not is_complete_checkpoint(str(files / 'cut.pth'))
    pointer = files / 'last_checkpoint'
    pointer.write_text(str(files / 'cut.pth'))
    assert latest_complete_checkpoint(str(pointer), [str(files / 'good.pth'), str(files / 'cut.pth')]) == str(
        files / 'good.pth')
    pointer.write_text('')
    assert latest_complete_checkpoint(str(pointer), [str(files / 'cut.pth')]) is None


class Payload:
    """An object besides tensors and plain data: unpickling it could run code."""


def test_load_checkpoint_file_never_unpickles_objects(tmp_path):
    import pickle
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'payload': Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match='Payload'):
        load_checkpoint_file(str(path), 'a checkpoint')


def test_a_folder_is_named_as_no_file(tmp_path):
    with pytest.raises(CheckpointFileError, match='is not a file; expected a checkpoint'):
        load_checkpoint_file(str(tmp_path), 'a checkpoint')


def test_the_pointer_wins_over_a_newer_file_and_without_it_the_newest_does(files, tmp_path):
    import os
    older, newer = tmp_path / 'epoch_9.pth', tmp_path / 'epoch_10.pth'  # the newer sorts first by name
    for path, stamp in ((older, 1_000_000), (newer, 2_000_000)):
        path.write_bytes((files / 'good.pth').read_bytes())
        os.utime(path, (stamp, stamp))
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text(str(older))
    assert latest_complete_checkpoint(str(pointer), [str(older), str(newer)]) == str(older)
    pointer.unlink()
    assert latest_complete_checkpoint(str(pointer), [str(older), str(newer)]) == str(newer)
