"""Checks that a recipe can run, done before any model is built or any data is read.

Each failure is a ``ConfigError`` with one line: the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig, check_finite

__all__ = ['check_model_name', 'preflight', 'resolve_device']


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'device' must be auto, cpu, cuda or cuda:N; got {name!r}") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'device {name!r} asked for, but torch sees no CUDA GPU (use device=cpu)')
    if device.type not in ('cpu', 'cuda'):
        raise ConfigError(f"config key 'device' must be auto, cpu, cuda or cuda:N; got {name!r}")
    return device


def check_model_name(name: str) -> None:
    import timm

    import timm_adl  # noqa: F401  (registers the WSOL backbones)

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
    hint = f' (close matches: {", ".join(close)})' if close else ''
    raise ConfigError(f'unknown model {name!r}: timm has no model of that name{hint}')


def _require_dir(key: str, path: str) -> None:
    if not path:
        raise ConfigError(f'config key {key!r} is required (the data set directory)')
    if not Path(path).is_dir():
        raise ConfigError(f'{key}: data directory not found: {path}')


def _require_file(key: str, path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f'{key}: file not found: {path}')


def preflight(cfg: TrainConfig) -> None:
    """Model name, data directories and weight files exist; nothing heavy is loaded."""
    check_finite(cfg)
    check_model_name(cfg.model)
    _require_dir('data.root', cfg.data.root)
    if cfg.data.name == 'wsol-metadata':
        from ..data.wsol_metadata import resolve_metadata_dir

        metadata_root = cfg.data.metadata_root or str(Path(cfg.data.root) / 'metadata')
        if not Path(metadata_root).is_dir():
            raise ConfigError(f'data.metadata_root: metadata directory not found: {metadata_root}')
        for key in ('train_split', 'val_split'):
            split = getattr(cfg.data, key)
            if split:
                try:
                    resolve_metadata_dir(metadata_root, split)
                except (OSError, ValueError) as err:
                    raise ConfigError(f'data.{key}: {err}') from None
    elif cfg.data.metadata_root:
        raise ConfigError(
            f"data.metadata_root is only used by data.name 'wsol-metadata', not {cfg.data.name!r}"
        )
    if cfg.initial_checkpoint:
        _require_file('initial_checkpoint', cfg.initial_checkpoint)
        if not cfg.initial_checkpoint.endswith('.safetensors'):
            raise ConfigError(f'initial_checkpoint must be a .safetensors file, got {cfg.initial_checkpoint}')
    if cfg.pretrained_file:
        if not cfg.pretrained:
            raise ConfigError('pretrained_file is set but pretrained is false: set pretrained=true to use it')
        _require_file('pretrained_file', cfg.pretrained_file)
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f'output_dir {out} exists and is not a directory')
