"""The input a checkpoint was trained on: its normalisation and size, for ``eval`` and ``cam``.

A model is only right on inputs normalised as in training, and recipes may set their own ``data.mean`` /
``data.std``; ``timm-adl train`` records them in its weights. This module finds them (flags first), says on
stderr which were used, and reports them for the JSON output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import CliError

__all__ = ['normalization_flags', 'parse_rgb_flag', 'resolve_input']


def parse_rgb_flag(values: list[str] | None, flag: str, positive: bool = False) -> tuple[float, ...] | None:
    """``--std 0.25 0.25 0.25`` as floats, or None when not given; a one-line error naming the bad value."""
    from ..data.transforms import check_mean_std

    if values is None:
        return None
    if len(values) != 3:
        raise CliError(f'{flag} takes 3 values (R G B), got {len(values)}: {" ".join(values)}')
    try:
        return check_mean_std(values, flag, positive=positive)
    except ValueError as err:
        raise CliError(str(err)) from None


def normalization_flags(args: argparse.Namespace) -> dict[str, tuple[float, ...] | None]:
    """The checked --mean / --std values (None where not given); checked before any model is built."""
    return {
        'mean': parse_rgb_flag(getattr(args, 'mean', None), '--mean'),
        'std': parse_rgb_flag(getattr(args, 'std', None), '--std', positive=True),
    }


def _note(text: str) -> None:
    print(f'timm-adl: {text}', file=sys.stderr)


def _run_config_record(ckpt: Path, model_name: str | None) -> dict[str, Any] | None:
    """``mean`` / ``std`` / ``input_size`` of the ``config.yaml`` that `timm-adl train` wrote beside ``ckpt``:
    runs from before the weights recorded their data config still evaluate as they trained. None when there
    is no such file or it is another model's."""
    import yaml

    from ..data.transforms import check_mean_std

    folders = [ckpt.parent] + ([ckpt.parent.parent] if ckpt.parent.name == 'resume' else [])
    path = next((f / 'config.yaml' for f in folders if (f / 'config.yaml').is_file()), None)
    if path is None:
        return None
    try:
        cfg = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        cfg = None
    if not isinstance(cfg, dict) or not isinstance(cfg.get('data'), dict) or not cfg.get('model'):
        _note(f'warning: {path} beside the checkpoint is not a `timm-adl train` config: ignored')
        return None
    if model_name and cfg['model'] != model_name:
        _note(f'warning: {path} is the config of a {cfg["model"]} run, not {model_name}: ignored')
        return None
    data = cfg['data']
    out: dict[str, Any] = {'file': str(path)}
    try:
        if data.get('mean') is not None:
            out['mean'] = check_mean_std(data['mean'], f'{path}: data.mean')
        if data.get('std') is not None:
            out['std'] = check_mean_std(data['std'], f'{path}: data.std', positive=True)
    except ValueError as err:
        raise CliError(str(err)) from None
    size = cfg.get('img_size')
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        out['input_size'] = (3, size, size)
    return out


def _rgb(values) -> str:
    return ' '.join(f'{v:g}' for v in values)


def resolve_input(
    args: argparse.Namespace, model, flags: dict[str, tuple[float, ...] | None]
) -> tuple[dict[str, Any], int]:
    """``(normalization, img_size)`` to feed ``model``: the input it was trained on, and where each came from.

    A model is only right on inputs normalised as in training, and recipes may set their own ``data.mean`` /
    ``data.std``. Each value comes from the first of: the flags (--mean, --std, --img-size); the checkpoint
    (``source='checkpoint'``: the data config `timm-adl train` records in its weights, or a save_pretrained
    folder's config.json); the ``config.yaml`` beside an older run's weights (``'run_config'``); the model's
    pretrained_cfg (``'pretrained_cfg'``). ``normalization`` is ``{'mean', 'std', 'source', 'file'}``, plus
    ``'sources'`` per value when mean and std come from different places (``source='mixed'``). The choice is
    printed on stderr.
    """
    from ..data import model_mean_std
    from ..train.checkpoint import read_data_config

    pretrained = model.pretrained_cfg or {}
    mean, std = model_mean_std(model)
    default = {'mean': mean, 'std': std, 'input_size': pretrained.get('input_size') or (3, 224, 224)}
    arch = pretrained.get('architecture') or args.model
    recorded: dict[str, Any] = {}
    source, file = 'pretrained_cfg', None
    ckpt = args.checkpoint
    if ckpt is not None and Path(ckpt).is_dir():  # save_pretrained folder: its config.json is the record
        recorded, source, file = default, 'checkpoint', str(Path(ckpt) / 'config.json')
    elif ckpt is not None:
        try:
            meta = read_data_config(ckpt)
        except ValueError as err:
            raise CliError(str(err).splitlines()[0]) from None
        if meta is not None:
            recorded, source, file = meta, 'checkpoint', ckpt
        else:
            run_cfg = _run_config_record(Path(ckpt), args.model)
            if run_cfg is not None:
                file = run_cfg.pop('file')
                recorded, source = run_cfg, 'run_config'
    values, sources = {}, {}
    for key in ('mean', 'std'):
        if flags.get(key) is not None:
            values[key], sources[key] = flags[key], 'flag'
        elif key in recorded:
            values[key], sources[key] = recorded[key], source
        else:
            values[key], sources[key] = default[key], 'pretrained_cfg'
    if args.img_size:
        img_size, size_source = args.img_size, '--img-size'
    elif 'input_size' in recorded:
        img_size, size_source = int(recorded['input_size'][-1]), source
    else:
        img_size, size_source = int(default['input_size'][-1]), 'pretrained_cfg'
    common = sources['mean'] if sources['mean'] == sources['std'] else 'mixed'
    normalization: dict[str, Any] = {
        'mean': [float(v) for v in values['mean']],
        'std': [float(v) for v in values['std']],
        'source': common,
        'file': file if source in sources.values() else None,
    }
    if common == 'mixed':
        normalization['sources'] = dict(sources)

    where = {
        'flag': 'the --mean/--std flags',
        'checkpoint': f'the checkpoint ({file})',
        'run_config': f'the run config beside the checkpoint ({file})',
        'pretrained_cfg': f"{arch}'s pretrained_cfg",
    }
    origin = (
        where[common]
        if common != 'mixed'
        else f'mean from {where[sources["mean"]]}, std from {where[sources["std"]]}'
    )
    text = f'normalisation mean {_rgb(values["mean"])}, std {_rgb(values["std"])} from {origin}'
    if size_source == common:
        text = f'input {img_size} px, {text}'
    else:
        text += f'; input {img_size} px from {where.get(size_source, size_source)}'
    if ckpt is not None and not Path(ckpt).is_dir() and 'pretrained_cfg' in sources.values() and not recorded:
        text = (
            f'warning: {ckpt} records no training normalisation (pass --mean/--std if it was trained with '
            f'values other than the model default): {text}'
        )
    _note(text)
    return normalization, img_size
