"""Checkpoint files: weights as safetensors, the training state as a separate weights-only torch file.

Layout of an output directory:

- ``last.safetensors`` / ``best.safetensors``: model weights (timm keys), loadable with
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=..., num_classes=K))``.
- ``resume/weights-<step>.safetensors`` + ``resume/state-<step>.pt``: a resume point. The pair is written
  first, each file atomically (temp file in the same directory, then ``os.replace``), and older pairs are
  deleted only afterwards, so a kill at any moment leaves at least one complete pair. The previous pair is
  kept beside the newest one: when a file of the newest pair is later found damaged (truncated by a full
  disk, a bad copy), resume falls back to the previous pair with a warning naming the damaged file
  (:func:`load_resume_point`).

Every weights file carries, in its safetensors metadata, the input the run trained on (``data_config``: JSON
``{"input_size": [3, H, W], "mean": [...], "std": [...]}``), so ``timm-adl eval`` / ``cam`` / ``push`` use
the recipe's normalisation rather than the model's ImageNet default (:func:`read_data_config`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from ..files import atomic_write_bytes
from ..hub.checkpoints import CorruptCheckpointError
from ..hub.weights import read_weights
from .config import ConfigError

__all__ = [
    'DATA_CONFIG_KEY',
    'ResumePoint',
    'atomic_write_bytes',
    'data_config_metadata',
    'latest_resume_point',
    'load_resume_point',
    'load_state',
    'load_weights',
    'read_data_config',
    'save_resume_point',
    'save_weights',
]

_RESUME_RE = re.compile(r'^state-(\d{9})\.pt$')
DATA_CONFIG_KEY = 'data_config'  # safetensors metadata key of the training input (a timm data config subset)


def save_weights(
    state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Model weights as safetensors (contiguous CPU copies; shared storage is split, which safetensors needs)."""
    tensors = {k: v.detach().to('cpu').contiguous().clone() for k, v in state_dict.items()}
    atomic_write_bytes(Path(path), save(tensors, metadata={'format': 'pt', **(metadata or {})}))


def data_config_metadata(mean, std, img_size: int) -> dict[str, str]:
    """Safetensors metadata recording the input a run trained on: evaluation must normalise the same way."""
    record = {
        'input_size': [3, int(img_size), int(img_size)],
        'mean': [float(v) for v in mean],
        'std': [float(v) for v in std],
    }
    return {DATA_CONFIG_KEY: json.dumps(record)}


def read_data_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """``{'mean', 'std'[, 'input_size']}`` recorded in a weights file by the trainer, or None when it has no
    record (a checkpoint from an older timm-adl or another tool). Raises ``ValueError`` for a malformed one,
    rather than silently evaluating with other numbers."""
    from safetensors import safe_open

    from ..data.transforms import check_mean_std

    with safe_open(str(path), framework='pt') as f:
        raw = (f.metadata() or {}).get(DATA_CONFIG_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise ValueError(f'{path}: metadata {DATA_CONFIG_KEY!r} is not a JSON object: {raw[:80]!r}')
    where = f'{path}: metadata {DATA_CONFIG_KEY}'
    out: dict[str, Any] = {
        'mean': check_mean_std(record.get('mean'), f'{where} mean'),
        'std': check_mean_std(record.get('std'), f'{where} std', positive=True),
    }
    size = record.get('input_size')
    if size is not None:
        if (
            not isinstance(size, list)
            or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise ValueError(f'{where} input_size must be 3 positive integers [C, H, W], got {size!r}')
        out['input_size'] = tuple(size)
    return out


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix != '.safetensors':
        raise ValueError(f'weights must be a .safetensors file (no pickles are loaded), got {path}')
    if not path.is_file():
        raise FileNotFoundError(f'weights file not found: {path}')
    # CorruptCheckpointError naming the file when it is truncated or not safetensors (a renamed pickle).
    return read_weights(path)


def _state_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_resume_point(
    resume_dir: Path,
    step: int,
    state_dict: dict[str, torch.Tensor],
    state: dict,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write the weights + state pair for ``step`` (``metadata`` added to the weights'), then drop the pairs
    older than the previous complete one (kept as the fallback should a file of the new pair be damaged)."""
    resume_dir = Path(resume_dir)
    weights = resume_dir / f'weights-{step:09d}.safetensors'
    save_weights(state_dict, weights, {**(metadata or {}), 'step': str(step)})
    atomic_write_bytes(resume_dir / f'state-{step:09d}.pt', _state_bytes(state))
    previous = [s for s in _complete_steps(resume_dir) if s < step]
    keep_from = previous[0] if previous else step
    for p in resume_dir.iterdir():
        m = re.match(r'^(?:state|weights)-(\d{9})\.', p.name)
        if (m and int(m.group(1)) < keep_from) or p.name.endswith('.tmp'):
            p.unlink(missing_ok=True)


def _complete_steps(resume_dir: Path) -> list[int]:
    """Steps that have both files of their pair, newest first."""
    steps = sorted(
        (int(m.group(1)) for p in resume_dir.iterdir() if (m := _RESUME_RE.match(p.name))), reverse=True
    )
    return [s for s in steps if (resume_dir / f'weights-{s:09d}.safetensors').is_file()]


def latest_resume_point(resume_dir: Path) -> tuple[Path, Path] | None:
    """``(weights, state)`` of the newest complete pair in ``resume_dir``, or None."""
    resume_dir = Path(resume_dir)
    if not resume_dir.is_dir():
        return None
    steps = _complete_steps(resume_dir)
    if not steps:
        return None
    return resume_dir / f'weights-{steps[0]:09d}.safetensors', resume_dir / f'state-{steps[0]:09d}.pt'


@dataclass
class ResumePoint:
    """The newest resume pair that reads back whole, and the damaged files skipped to reach it."""

    weights: dict[str, torch.Tensor]
    state: dict
    weights_path: Path
    state_path: Path
    skipped: list[str] = field(default_factory=list)  # one warning line per damaged file


def load_resume_point(resume_dir: Path) -> ResumePoint | None:
    """Read the newest complete pair of ``resume_dir``; when one of its files is damaged, fall back to the
    pair before it (a warning line in ``skipped`` names the file). None when there is no pair; a
    ``ConfigError`` when every pair is damaged."""
    resume_dir = Path(resume_dir)
    if not resume_dir.is_dir():
        return None
    steps = _complete_steps(resume_dir)
    skipped: list[str] = []
    for step in steps:
        weights_path = resume_dir / f'weights-{step:09d}.safetensors'
        state_path = resume_dir / f'state-{step:09d}.pt'
        try:
            weights = load_weights(weights_path)
        except CorruptCheckpointError as err:
            why = err.__cause__ or err  # the safetensors reason, without the Hub-cache advice
            skipped.append(f'damaged resume file {weights_path} ({type(why).__name__}: {why})')
            continue
        try:
            state = load_state(state_path)
        except _STATE_ERRORS as err:
            skipped.append(
                f'damaged resume file {state_path} ({type(err).__name__}: {str(err).splitlines()[0]})'
            )
            continue
        if skipped:
            skipped[-1] += f'; resuming from the previous pair (step {step})'
        return ResumePoint(weights, state, weights_path, state_path, skipped)
    if not steps:
        return None
    raise ConfigError(f'every resume point in {resume_dir} is damaged: ' + '; '.join(skipped))


# What torch.load(weights_only=True) raises for a truncated or foreign file.
_STATE_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


def load_state(path: Path) -> dict:
    # Our own file, still read with weights_only=True: no code can run from it.
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f'{path} holds a {type(state).__name__}, not a training state')
    return state
