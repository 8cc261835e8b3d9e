"""Whole-or-nothing writes: the old file or the whole new one, never a temp file left behind."""

import os

import pytest

from timm_adl.files import atomic_copy, atomic_write_bytes, umask_mode


def test_write_replaces_whole_with_the_open_mode(tmp_path):
    path = tmp_path / 'sub' / 'out.bin'
    atomic_write_bytes(path, b'old')
    atomic_write_bytes(path, b'new', durable=False)
    assert path.read_bytes() == b'new'
    assert path.stat().st_mode & 0o777 == umask_mode()
    assert os.listdir(path.parent) == ['out.bin']


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / 'out.bin'
    atomic_write_bytes(path, b'old')
    with pytest.raises(TypeError):
        atomic_write_bytes(path, 'not bytes')  # fails inside the write
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['out.bin']


def test_copy_replaces_and_a_missing_source_leaves_nothing(tmp_path):
    src, dst = tmp_path / 'a.bin', tmp_path / 'b.bin'
    src.write_bytes(b'payload')
    dst.write_bytes(b'old')
    atomic_copy(src, dst)
    assert dst.read_bytes() == b'payload'
    with pytest.raises(OSError):
        atomic_copy(tmp_path / 'missing.bin', dst)
    assert dst.read_bytes() == b'payload'
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'b.bin']
