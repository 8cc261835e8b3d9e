"""Whole-or-nothing file writes: every file timm-adl writes goes through :func:`atomic_write_bytes` or
:func:`atomic_copy`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ['atomic_copy', 'atomic_write_bytes', 'umask_mode']


def umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (``mkstemp`` creates them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def _replacing(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(fd, tmp)``: an open temp file beside ``path`` that replaces it when the block ends, and is
    removed if the block raises (nothing half-written is left)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    A temp file in the same folder, then ``os.replace``. ``durable`` also syncs it to disk first, so a
    crash cannot leave an empty file behind the new name (checkpoints, logs); bulk outputs (score maps,
    pictures) skip that cost.
    """
    with _replacing(path) as (fd, tmp):
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Replace ``dst`` by a copy of ``src`` atomically: a hard link where the file system allows (our
    checkpoint files are never modified in place, only replaced), else a byte copy."""
    with _replacing(dst) as (fd, tmp):
        os.close(fd)
        try:
            os.unlink(tmp)
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, umask_mode())
