"""``load_model``: the one way from weights to a model and the input it expects.

Every command (``eval``, ``cam``, ``push``, ``demo``) and the trainer's ``initial_checkpoint`` go through
here, so a checkpoint is read, checked and understood the same way everywhere:

- a weights file (``.safetensors`` only): built from the run's ``config.yaml`` when the file belongs to a run
  folder (or ``recipe=`` is given), else from ``model=``; loaded strictly;
- a run folder of ``timm-adl train`` (its ``best`` or ``last`` weights, see ``timm_adl.train.run_layout``);
- a save_pretrained folder or a Hub id (``timm_adl.load``'s checks: hash, safetensors, ADL placement).

Each input setting comes from the first place that has it: an override argument, the data config the
trainer records in each weights file, the run's ``config.yaml``, a Hub ``config.json``, the architecture's
pretrained_cfg; ``LoadedModel.sources`` says which.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..train.run_layout import WEIGHTS_CHOICES, RunLayout, find_run_folder
from .loaded import LoadedModel, Source
from .weights import read_weights

__all__ = ['LoadedModel', 'load_model', 'read_checkpoint']

_PREFIXES = ('module.', '_orig_mod.')
# Weights files by their name (a missing one is reported as a file, not looked up on the Hub).
_WEIGHT_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.ckpt', '.pkl')


@dataclasses.dataclass
class _Opened:
    """A model built and loaded, with what its files said about its input (before overrides)."""

    model: nn.Module
    architecture: str
    arch_source: Source
    weights_file: str | None
    label_names: list[str] | None = None
    record: dict[str, Any] = dataclasses.field(default_factory=dict)  # setting -> value
    record_sources: dict[str, Source] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    run_config: Any = None
    notes: list[str] = dataclasses.field(default_factory=list)


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) wrappers' prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _weights_path(source: str | os.PathLike, weights: str) -> Path:
    """The ``.safetensors`` file ``source`` names: the file itself, or a run folder's best/last weights."""
    path = Path(source)
    if path.is_dir():
        layout = RunLayout(path)
        if not layout.config.is_file():
            raise FileNotFoundError(
                f'{path} is not a training run folder: {layout.config.name} not found'
                ' (a save_pretrained folder holds config.json and model.safetensors)'
            )
        found = layout.weights(weights)
        if not found.is_file():
            raise FileNotFoundError(f'{path} is not a training run folder: {found.name} not found')
        return found
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if path.suffix != '.safetensors':
        raise ValueError(
            f'weights must be a .safetensors file or a run folder (no pickles are loaded), got {path}'
        )
    return path


def read_checkpoint(source: str | os.PathLike, weights: str = 'best') -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of a weights file or run folder (``module.`` prefixes removed) and the file read.

    A damaged file raises ``CorruptCheckpointError`` naming it (``read_weights``); the trainer's
    ``initial_checkpoint`` reads through here.
    """
    path = _weights_path(source, weights)
    return strip_prefixes(read_weights(path)), path


def _unknown_model(name: str) -> ValueError:
    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f' (closest: {", ".join(close)})' if close else ''
    return ValueError(f'unknown timm model {name!r}{hint}')


def _create(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise _unknown_model(name)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        raise ValueError(f'cannot build {name} with {dict(kwargs)}: {err}') from None


def _classifier_rows(name: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """Classes of a checkpoint: rows of its classifier weight (the architecture's pretrained_cfg key)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    classifier = getattr(cfg, 'classifier', None) if cfg is not None else None
    names = [classifier] if isinstance(classifier, str) else list(classifier or ['fc'])
    for key in names:
        if f'{key}.weight' in state:
            return int(state[f'{key}.weight'].shape[0])
    return None


def _run_config(weights: Path, recipe: Any, model: str | None, notes: list[str]) -> tuple[Any, str | None]:
    """``(TrainConfig, its file)`` the weights were trained with: ``recipe`` when given, else the run
    folder's ``config.yaml`` unless it is another model's (then ignored, with a note)."""
    from ..train import load_config
    from ..train.config import ConfigError

    if recipe is not None:
        return load_config(recipe), (os.fspath(recipe) if isinstance(recipe, (str, os.PathLike)) else None)
    layout = find_run_folder(weights)
    if layout is None:
        return None, None
    try:
        cfg = load_config(layout.config)
    except (ConfigError, OSError) as err:
        notes.append(
            f'warning: {layout.config} beside the checkpoint is not a `timm-adl train` config: ignored ({err})'
        )
        return None, None
    if model and cfg.model != model:
        notes.append(f'warning: {layout.config} is the config of a {cfg.model} run, not {model}: ignored')
        return None, None
    return cfg, str(layout.config)


def _build_from_recipe(cfg: Any, name: str, kwargs: dict[str, Any], num_classes: int | None) -> nn.Module:
    """The model as the run built it (ADL included), minus its starting weights (the checkpoint replaces them)."""
    from ..train.distributed import DistInfo
    from ..train.engine import build_model

    if not _is_model(name):
        raise _unknown_model(name)
    build_cfg = dataclasses.replace(
        cfg,
        model=name,
        model_kwargs={**cfg.model_kwargs, **kwargs},
        pretrained=False,
        pretrained_file=None,
        initial_checkpoint=None,
    )
    rng = torch.random.get_rng_state()
    try:
        model, _ = build_model(build_cfg, num_classes, DistInfo())
    finally:
        torch.random.set_rng_state(rng)  # build_model seeds torch for the trainer; a loader leaves it alone
    return model


def _is_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], weights: Path, name: str) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = next((line.strip() for line in str(err).splitlines() if 'size mismatch' in line), str(err))
        raise ValueError(
            f'cannot load {weights}: it does not fit {name}: {detail} (wrong model or recipe?)'
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f'cannot load {weights}: it does not fit {name}: missing {result.missing_keys[:3]}, '
            f'unexpected {result.unexpected_keys[:3]} (wrong model or recipe?)'
        )


def _open_weights(weights: Path, model: str | None, kwargs: dict[str, Any], recipe: Any) -> _Opened:
    from ..train.checkpoint import read_data_config

    notes: list[str] = []
    state = strip_prefixes(read_weights(weights))
    cfg, cfg_file = _run_config(weights, recipe, model, notes)
    name = model or (cfg.model if cfg is not None else None)
    if not name:
        raise ValueError(
            f'{weights} has no config.yaml beside it: give the model name (--model NAME) or a recipe'
        )
    if not _is_model(name):
        raise _unknown_model(name)
    num_classes = kwargs.pop('num_classes', None) or _classifier_rows(name, state)
    if num_classes is None and cfg is not None:
        num_classes = cfg.num_classes
    if cfg is not None:
        net = _build_from_recipe(cfg, name, kwargs, num_classes)
    else:
        net = _create(name, {**kwargs, **({'num_classes': num_classes} if num_classes else {})})
    _load_strict(net, state, weights, name)
    opened = _Opened(net, name, 'override' if model else 'run config.yaml', str(weights), notes=notes)
    opened.run_config = cfg
    meta = read_data_config(weights)  # ValueError for a malformed record
    if meta is not None:
        opened.files['checkpoint metadata'] = str(weights)
        for key, value in meta.items():
            opened.record[key], opened.record_sources[key] = value, 'checkpoint metadata'
    if cfg is not None:
        opened.files['run config.yaml'] = cfg_file or ''
        from_cfg = {'mean': cfg.data.mean, 'std': cfg.data.std, 'input_size': (3, cfg.img_size, cfg.img_size)}
        for key, value in from_cfg.items():
            if value is not None and key not in opened.record:
                opened.record[key], opened.record_sources[key] = tuple(value), 'run config.yaml'
        opened.record['cam_method'], opened.record_sources['cam_method'] = cfg.cam_method, 'run config.yaml'
    return opened


def _open_pretrained(name: str, model: str | None, kwargs: dict[str, Any], revision, cache_dir) -> _Opened:
    from .loading import open_pretrained

    folder = open_pretrained(name, revision, cache_dir=cache_dir, **kwargs)
    arch = folder.model.pretrained_cfg.get('architecture') or folder.config.get('architecture')
    if model and arch and model != arch:
        raise ValueError(f'model {model} differs from the architecture of {name}: {arch}')
    opened = _Opened(folder.model, arch, 'config.json', folder.config_file, label_names=folder.label_names)
    opened.files['config.json'] = folder.config_file
    pretrained = folder.model.pretrained_cfg or {}
    for key in ('mean', 'std', 'input_size'):
        if pretrained.get(key) is not None:
            opened.record[key], opened.record_sources[key] = tuple(pretrained[key]), 'config.json'
    if folder.label_names is not None:
        opened.record_sources['label_names'] = 'config.json'
    return opened


def _is_pretrained_source(name: str) -> bool:
    """A save_pretrained folder or a Hub id, rather than a weights file or a run folder."""
    path = Path(name)
    if name.startswith(('hf-hub:', 'local-dir:')):
        return True
    if path.is_dir():
        return (path / 'config.json').is_file() or not RunLayout(path).config.is_file()
    if path.exists():
        return False
    looks_local = name.startswith(('/', '.', '~')) or name.count('/') > 1 or path.suffix in _WEIGHT_SUFFIXES
    return not looks_local


def _overridden(value: Sequence[float] | None, what: str, positive: bool = False) -> tuple[float, ...] | None:
    from ..data.transforms import check_mean_std

    return None if value is None else tuple(check_mean_std(value, what, positive=positive))


def load_model(
    source: str | os.PathLike | None,
    *,
    model: str | None = None,
    num_classes: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    weights: str = 'best',
    recipe: Any = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    img_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cam_method: str | None = None,
    pretrained_only: bool = False,
) -> LoadedModel:
    """A model in eval mode from ``source`` and the input settings it expects, each with its source.

    Args:
        source: a ``.safetensors`` file, a run folder of ``timm-adl train``, a save_pretrained folder, a Hub
            id (``ORG/NAME[@rev]``, ``hf-hub:`` accepted); None for random weights (``model`` needed).
        model: timm model name; needed for weights without a run config; checked against a folder's.
        num_classes: classes of the head (default: the checkpoint's classifier rows).
        model_kwargs: extra ``timm.create_model`` kwargs (on top of the recipe's ``model_kwargs``).
        weights: ``'best'`` or ``'last'`` weights of a run folder.
        recipe: the recipe (path, dict or TrainConfig) the weights were trained with, when they travel alone.
        revision, cache_dir: for Hub ids, as in ``timm_adl.load``.
        img_size, mean, std, cam_method: overrides of the recorded settings (source ``'override'``).
        pretrained_only: accept only Hub ids and save_pretrained folders (what ``timm_adl.load`` takes).

    Raises ``FileNotFoundError`` for missing files, ``CorruptCheckpointError`` for damaged ones,
    ``ValueError`` (``ConfigError`` for a bad recipe) for weights that do not fit or bad arguments.
    """
    import timm_adl  # noqa: F401  (registers the paper's backbones and adl_inserted)

    if weights not in WEIGHTS_CHOICES:
        raise ValueError(f'weights must be one of {", ".join(WEIGHTS_CHOICES)}, got {weights!r}')
    if num_classes is not None and num_classes < 1:
        raise ValueError(f'num_classes must be >= 1, got {num_classes}')
    if img_size is not None and img_size < 1:
        raise ValueError(f'img_size must be >= 1, got {img_size}')
    overrides = {
        'mean': _overridden(mean, 'mean'),
        'std': _overridden(std, 'std', positive=True),
        'input_size': None if img_size is None else (3, img_size, img_size),
        'cam_method': cam_method,
    }
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    name = None if source is None else os.fspath(source)
    if name is None:
        if not model:
            raise ValueError('a checkpoint or a model name is needed')
        opened = _Opened(_create(model, kwargs).eval(), model, 'override', None)
    elif pretrained_only or _is_pretrained_source(name):
        if pretrained_only and Path(name).is_file():
            raise ValueError(
                f'{name} is a file: load takes a folder written by save_pretrained or a Hub repo id'
            )
        opened = _open_pretrained(name, model, kwargs, revision, cache_dir)
    else:
        opened = _open_weights(_weights_path(name, weights), model, kwargs, recipe)
    return _settle(opened, overrides)


def _settle(opened: _Opened, overrides: dict[str, Any]) -> LoadedModel:
    """Pick each setting from the first place that has it and record that place."""
    from ..data.transforms import model_mean_std
    from ..surgery import adl_points

    net = opened.model.eval()
    pretrained = net.pretrained_cfg or {}
    mean, std = model_mean_std(net)
    fallback: dict[str, tuple[Any, Source]] = {
        'mean': (mean, 'pretrained_cfg'),
        'std': (std, 'pretrained_cfg'),
        'input_size': (tuple(pretrained['input_size']), 'pretrained_cfg')
        if pretrained.get('input_size')
        else ((3, 224, 224), 'default'),
        'cam_method': ('cam', 'default'),
    }
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for key, (value, source) in fallback.items():
        if overrides.get(key) is not None:
            values[key], sources[key] = overrides[key], 'override'
        elif key in opened.record:
            values[key], sources[key] = opened.record[key], opened.record_sources[key]
        else:
            values[key], sources[key] = value, source
    sources.update(
        architecture=opened.arch_source,
        label_names=opened.record_sources.get('label_names', 'none'),
        adl_points='run config.yaml' if opened.run_config is not None else opened.arch_source,
    )
    return LoadedModel(
        model=net,
        label_names=opened.label_names,
        architecture=opened.architecture,
        input_size=tuple(int(v) for v in values['input_size']),
        mean=tuple(float(v) for v in values['mean']),
        std=tuple(float(v) for v in values['std']),
        cam_method=str(values['cam_method']),
        adl_points=adl_points(net),
        sources=sources,
        files=dict(opened.files),
        weights_file=opened.weights_file,
        run_config=opened.run_config,
        notes=opened.notes,
    )
