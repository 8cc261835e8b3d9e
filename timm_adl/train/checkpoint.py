"""Checkpoint files: weights as safetensors, the training state as a separate weights-only torch file.

Layout of an output directory:

- ``last.safetensors`` / ``best.safetensors``: model weights (timm keys), loadable with
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=..., num_classes=K))``.
- ``resume/weights-<step>.safetensors`` + ``resume/state-<step>.pt``: a resume point. The pair is written
  first, each file atomically (temp file in the same directory, then ``os.replace``), and older pairs are
  deleted only afterwards, so a kill at any moment leaves at least one complete pair; resume takes the
  newest *complete* pair.

Every weights file carries, in its safetensors metadata, the input the run trained on (``data_config``: JSON
``{"input_size": [3, H, W], "mean": [...], "std": [...]}``), so ``timm-adl eval`` / ``cam`` / ``push`` use
the recipe's normalisation rather than the model's ImageNet default (:func:`read_data_config`).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..files import atomic_write_bytes

__all__ = [
    'DATA_CONFIG_KEY',
    'atomic_write_bytes',
    'data_config_metadata',
    'latest_resume_point',
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
    return load_file(str(path))


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
    """Write the weights + state pair for ``step`` (``metadata`` added to the weights'), then drop older pairs."""
    resume_dir = Path(resume_dir)
    weights = resume_dir / f'weights-{step:09d}.safetensors'
    save_weights(state_dict, weights, {**(metadata or {}), 'step': str(step)})
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
