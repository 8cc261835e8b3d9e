"""The trainer's explicit state: what a run carries from step to step, and the objects it builds once.

``TrainState`` is everything that changes while a run trains and that a resume must restore (it is the
resume file's payload, besides the optimizer, scaler and generator states). ``TrainSession`` holds what
``run_training`` builds from the recipe (model, optimizer, loaders, ...), fixed for the run's life. Both
live in the run's own call frames, never in a module: a study can train many recipes in one process and no
run sees another's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import ConfigError, TrainConfig
from .distributed import DistInfo, GlobalBatchSampler
from .run_layout import RunLayout

__all__ = ['STATE_VERSION', 'TrainSession', 'TrainState']

# The resume file's format version: bump it (and keep reading the old one) if a key changes meaning.
STATE_VERSION = 1


@dataclass
class TrainState:
    """Progress of one run; every field is saved in the resume file under its own name."""

    step: int = 0  # optimizer steps taken so far (the schedules are pure functions of it)
    epoch: int = 0  # whole epochs done
    step_in_epoch: int = 0  # steps done inside the current epoch (a resume skips them)
    best: dict | None = None  # {'epoch': int, 'metrics': {...}} of the selected epoch, None before validation
    history: list[dict] = field(default_factory=list)  # one record per finished epoch (log.jsonl)
    epoch_loss: list = field(default_factory=lambda: [0.0, 0])  # [sum of loss * images, images] this epoch
    train_seconds: float = 0.0  # training loop time, validation and checkpoints excluded
    val_seconds: float = 0.0
    world_size: int = 1  # processes of the run that started it (kept across resumes, as before)
    version: int = STATE_VERSION

    # The resume file's key order (unchanged since version 1, so the bytes of a state file are too).
    _KEYS = (
        'version', 'step', 'epoch', 'step_in_epoch', 'best', 'history', 'epoch_loss', 'train_seconds',
        'val_seconds', 'world_size',
    )  # fmt: skip

    def to_payload(self) -> dict[str, Any]:
        """The state's keys for the resume file (the caller adds optimizer, scaler and rng)."""
        return {key: getattr(self, key) for key in self._KEYS}

    @classmethod
    def from_payload(cls, saved: dict[str, Any], source: str = 'the resume file', **fresh: Any) -> TrainState:
        """The state a resume file holds; keys it lacks keep their fresh-run value (``fresh``, else the default)."""
        if saved.get('version') != STATE_VERSION:
            raise ConfigError(f'{source} is a training state of another version ({saved.get("version")})')
        return cls(**{**fresh, **{key: saved[key] for key in cls._KEYS if key in saved}})

    def start_epoch(self) -> None:
        """Close the epoch just trained: the next one starts at its first step with a zero loss sum."""
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss = [0.0, 0]


@dataclass
class TrainSession:
    """What one run builds from its recipe and uses unchanged until it ends."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    layout: RunLayout  # the output folder's file names
    model: nn.Module  # the bare model: saved, validated
    train_model: nn.Module  # what the steps call: the model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    peaks: list[float]  # each param group's peak learning rate
    scaler: torch.amp.GradScaler
    sampler: GlobalBatchSampler
    train_loader: DataLoader
    val_loader: DataLoader | None
    data_meta: dict[str, str]  # normalisation and size, recorded in every weights file
    amp_dtype: torch.dtype | None
    channels_last: bool
    cutmix: Any = None  # timm's Mixup set to CutMix (aug.cutmix_alpha > 0), else None

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs
