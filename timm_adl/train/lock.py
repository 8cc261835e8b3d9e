"""One run per output folder: a lock file held for the run's whole life.

The trainer's "already holds a run" check looks for a resume point, which the first run writes only after
its first checkpoint; two runs started close together both passed it and mixed their files. The lock is
taken before any work instead. The file (``.timm-adl.lock`` in the output folder) names the holder's PID,
host and start time, and the holder keeps an exclusive ``flock`` on it: the kernel drops that lock when the
process dies, however it dies, so a leftover file whose lock is free is stale and is taken over with a
warning. A file left by a run on another host is not taken over (its PID cannot be checked from here).
Under torchrun only rank 0 holds the lock; the other ranks stop with its error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError

__all__ = ['LOCK_NAME', 'RunLock', 'RunLockedError', 'acquire_run_lock', 'lock_output_dir']

LOCK_NAME = '.timm-adl.lock'


class RunLockedError(ConfigError):
    """The output folder is held by another run (one line naming it)."""


@dataclass
class RunLock:
    """A held lock: release it when the run ends."""

    path: Path
    fd: int
    created_dir: bool  # the folder did not exist before this run: remove it again if the run left it empty

    def release(self) -> None:
        """Delete the lock file (while still holding it, so no other run can slip in between), and the
        folder when this run created it and wrote nothing."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only succeeds when empty


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return 'a run that wrote no details'
    return f'PID {holder.get("pid")} on host {holder.get("host")} (started {holder.get("started")})'


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def acquire_run_lock(folder: str | os.PathLike, warn: Callable[[str], None] | None = None) -> RunLock:
    """Lock ``folder`` (created if missing) for this process; ``RunLockedError`` naming the holder when
    another run holds it. ``warn`` receives the line reporting a stale lock taken over."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    host = socket.gethostname()
    for _ in range(5):  # retried only when the file was replaced between open and lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f'output_dir {folder} is in use by another run: {_describe(holder)}; wait for it to end or '
                'choose another output_dir'
            ) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder released it between our open and our lock
            same_file = False
        if not same_file:
            os.close(fd)
            continue
        previous = _holder(fd)
        if previous and previous.get('host') != host:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise RunLockedError(
                f'output_dir {folder} holds the lock file of a run on another host: {_describe(previous)}; '
                f'if that run is over, delete {path}'
            )
        if previous and warn is not None:
            alive = ' (that PID is now another process)' if _pid_alive(previous.get('pid')) else ''
            warn(
                f'output_dir {folder}: took over the stale lock of {_describe(previous)}{alive}: it had ended'
            )
        record = dict(pid=os.getpid(), host=host, started=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + '\n').encode())
        os.fsync(fd)
        return RunLock(path, fd, created)
    raise RunLockedError(f'output_dir {folder}: cannot take its lock {path} (it keeps being replaced)')


def lock_output_dir(
    folder: str | os.PathLike, *, is_main: bool, distributed: bool, warn: Callable[[str], None]
) -> RunLock | None:
    """Rank 0 takes the lock; with ``distributed`` every rank learns its outcome, so all stop together."""
    lock, error = None, None
    if is_main:
        try:
            lock = acquire_run_lock(folder, warn)
        except RunLockedError as err:
            error = str(err)
    if distributed:
        import torch.distributed as dist

        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise RunLockedError(error)
    return lock
