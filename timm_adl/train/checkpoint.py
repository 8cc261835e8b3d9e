"""Checkpoint files: weights as safetensors, the training state as a separate weights-only torch file.

Layout of an output directory:

- ``last.safetensors`` / ``best.safetensors``: model weights (timm keys), loadable with
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=..., num_classes=K))``.
- ``resume/weights-<step>.safetensors`` + ``resume/state-<step>.pt``: a resume point. The pair is written
  first, each file atomically (temp file in the same directory, then ``os.replace``), and older pairs are
  deleted only afterwards, so a kill at any moment leaves at least one complete pair; resume takes the
  newest *complete* pair.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

__all__ = [
    'atomic_write_bytes',
    'latest_resume_point',
    'load_state',
    'load_weights',
    'save_resume_point',
    'save_weights',
]

_RESUME_RE = re.compile(r'^state-(\d{9})\.pt$')


def _umask_mode() -> int:
    # mkstemp creates 0600 files; give the final file the mode a plain open() would have.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Replace ``dst`` by a copy of ``src`` atomically: a hard link where the file system allows (our
    checkpoint files are never modified in place, only replaced), else a byte copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{dst.name}.', suffix='.tmp', dir=dst.parent)
    os.close(fd)
    try:
        try:
            os.unlink(tmp)
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, _umask_mode())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_weights(
    state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Model weights as safetensors (contiguous CPU copies; shared storage is split, which safetensors needs)."""
    tensors = {k: v.detach().to('cpu').contiguous().clone() for k, v in state_dict.items()}
    atomic_write_bytes(Path(path), save(tensors, metadata={'format': 'pt', **(metadata or {})}))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix != '.safetensors':
        raise ValueError(f'weights must be a .safetensors file (no pickles are loaded), got {path}')
    if not path.is_file():
        raise FileNotFoundError(f'weights file not found: {path}')
    return load_file(str(path))


def _state_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_resume_point(resume_dir: Path, step: int, state_dict: dict[str, torch.Tensor], state: dict) -> None:
    """Write the weights + state pair for ``step``, then drop older pairs."""
    resume_dir = Path(resume_dir)
    save_weights(state_dict, resume_dir / f'weights-{step:09d}.safetensors', {'step': str(step)})
    atomic_write_bytes(resume_dir / f'state-{step:09d}.pt', _state_bytes(state))
    for p in resume_dir.iterdir():
        m = re.match(r'^(?:state|weights)-(\d{9})\.', p.name)
        if (m and int(m.group(1)) < step) or p.name.endswith('.tmp'):
            p.unlink(missing_ok=True)


def latest_resume_point(resume_dir: Path) -> tuple[Path, Path] | None:
    """``(weights, state)`` of the newest complete pair in ``resume_dir``, or None."""
    resume_dir = Path(resume_dir)
    if not resume_dir.is_dir():
        return None
    steps = sorted(
        (int(m.group(1)) for p in resume_dir.iterdir() if (m := _RESUME_RE.match(p.name))), reverse=True
    )
    for step in steps:
        weights = resume_dir / f'weights-{step:09d}.safetensors'
        if weights.is_file():
            return weights, resume_dir / f'state-{step:09d}.pt'
    return None


def load_state(path: Path) -> dict:
    # Our own file, still read with weights_only=True: no code can run from it.
    return torch.load(path, map_location='cpu', weights_only=True)
