"""Training: ``load_config`` reads a recipe, ``run_training`` trains, validates, checkpoints and resumes.

``import timm_adl.train`` stays light: the training loop (and the data, CAM and metric modules it uses) is
imported on the first call to ``run_training``.
"""

from __future__ import annotations

import os
from typing import Any

from .config import (
    AdlConfig,
    AugConfig,
    ConfigError,
    DataConfig,
    OptimConfig,
    SchedConfig,
    TrainConfig,
    config_to_dict,
    load_config,
    save_config,
)

__all__ = [
    'AdlConfig',
    'AugConfig',
    'ConfigError',
    'DataConfig',
    'OptimConfig',
    'SchedConfig',
    'TrainConfig',
    'config_to_dict',
    'load_config',
    'run_training',
    'save_config',
]


def run_training(
    cfg: TrainConfig | dict | str | os.PathLike, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train a recipe; see :func:`timm_adl.train.engine.run_training` for the returned dict."""
    from .engine import run_training as _run_training

    return _run_training(cfg, resume=resume, progress=progress)
