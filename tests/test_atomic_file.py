"""write_atomically: the target holds its old content or all of the new, whatever stops the write."""
import errno
import os

import pytest
import torch

from dcal_plugin import atomic_file
from dcal_plugin.atomic_file import DiskFullError, save_atomically, write_atomically


def test_write_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old')
    write_atomically(target, b'new content')
    write_atomically(tmp_path / 'sub' / 'last_checkpoint', 'a/b.pth')
    assert target.read_bytes() == b'new content'
    assert (tmp_path / 'sub' / 'last_checkpoint').read_text() == 'a/b.pth'
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'sub']


def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old complete checkpoint')

    def die(descriptor):  # the bytes are written, the process stops before they are durable and renamed
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_file.os, 'fsync', die)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, b'x' * 1000)
    assert target.read_bytes() == b'old complete checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_a_full_disk_is_named_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / 'model.pth.tar-2'
    target.write_bytes(b'old')

    def full(descriptor):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(atomic_file.os, 'fsync', full)
    with pytest.raises(DiskFullError, match=r'no space left on the device to write .*model.pth.tar-2 \(3 bytes, '
                                            r'[\d,]+ bytes free\); the file was not changed'):
        write_atomically(target, b'new')
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['model.pth.tar-2']


def test_save_atomically_writes_what_torch_load_reads(tmp_path):
    state = {'state_dict': {'w': torch.arange(6.0).reshape(2, 3)}, 'epoch': 3}
    save_atomically(state, tmp_path / 'ckpt.pth')
    loaded = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    assert loaded['epoch'] == 3 and torch.equal(loaded['state_dict']['w'], state['state_dict']['w'])
