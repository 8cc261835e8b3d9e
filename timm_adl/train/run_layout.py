"""The files of a training run folder: the one place that knows their names.

``timm-adl train`` writes them, and the model loader (``timm_adl.hub.load_model``), ``push`` and ``eval``
read them; every other module asks this one instead of spelling ``best.safetensors`` itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    'BEST_WEIGHTS',
    'CONFIG_NAME',
    'LAST_WEIGHTS',
    'LOG_NAME',
    'RESUME_DIR',
    'SUMMARY_NAME',
    'WEIGHTS_CHOICES',
    'RunLayout',
    'find_run_folder',
]

BEST_WEIGHTS = 'best.safetensors'
LAST_WEIGHTS = 'last.safetensors'
CONFIG_NAME = 'config.yaml'
SUMMARY_NAME = 'summary.json'
LOG_NAME = 'log.jsonl'
RESUME_DIR = 'resume'
WEIGHTS_CHOICES = ('best', 'last')  # which weights of a run folder a loader takes


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder ``root`` (a plain value: nothing is read or created)."""

    root: Path

    @property
    def best(self) -> Path:
        return self.root / BEST_WEIGHTS

    @property
    def last(self) -> Path:
        return self.root / LAST_WEIGHTS

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_NAME

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def resume(self) -> Path:
        return self.root / RESUME_DIR

    def weights(self, which: str = 'best') -> Path:
        """``best.safetensors`` or ``last.safetensors``."""
        if which not in WEIGHTS_CHOICES:
            raise ValueError(f'weights must be one of {", ".join(WEIGHTS_CHOICES)}, got {which!r}')
        return self.best if which == 'best' else self.last

    def is_run(self) -> bool:
        """A folder ``timm-adl train`` wrote: its config and at least one weights file."""
        return self.config.is_file() and (self.best.is_file() or self.last.is_file())


def find_run_folder(weights: str | os.PathLike) -> RunLayout | None:
    """The run folder a weights file belongs to (its own folder, or the run above ``resume/``), when a
    ``config.yaml`` is there; None for weights that travel alone."""
    path = Path(weights)
    folders = [path.parent] + ([path.parent.parent] if path.parent.name == RESUME_DIR else [])
    return next((RunLayout(f) for f in folders if (f / CONFIG_NAME).is_file()), None)
