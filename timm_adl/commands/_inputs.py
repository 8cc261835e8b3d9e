"""How ``eval`` and ``cam`` report the input a checkpoint was trained on.

The model loader (``timm_adl.hub.load_model``) finds the input settings and where each came from; this
module checks the --mean/--std flags before any work, says on stderr which settings were used, and gives
the ``normalization`` record of ``eval --json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli import CliError

__all__ = ['normalization_flags', 'parse_rgb_flag', 'report_input']

# The loader's sources as ``eval --json`` has always named them.
_JSON_SOURCE = {
    'override': 'flag',
    'checkpoint metadata': 'checkpoint',
    'config.json': 'checkpoint',
    'run config.yaml': 'run_config',
    'pretrained_cfg': 'pretrained_cfg',
    'default': 'pretrained_cfg',
}


def parse_rgb_flag(values: list[str] | None, flag: str, positive: bool = False) -> tuple[float, ...] | None:
    """``--std 0.25 0.25 0.25`` as floats, or None when not given; a one-line error naming the bad value."""
    from ..data.transforms import check_mean_std

    if values is None:
        return None
    if len(values) != 3:
        raise CliError(f'{flag} takes 3 values (R G B), got {len(values)}: {" ".join(values)}')
    return check_mean_std(values, flag, positive=positive)  # a ValueError is one line in cli.main


def normalization_flags(args: argparse.Namespace) -> dict[str, tuple[float, ...] | None]:
    """The checked --mean / --std values (None where not given); checked before any model is built."""
    return {
        'mean': parse_rgb_flag(getattr(args, 'mean', None), '--mean'),
        'std': parse_rgb_flag(getattr(args, 'std', None), '--std', positive=True),
    }


def _note(text: str) -> None:
    print(f'timm-adl: {text}', file=sys.stderr)


def _rgb(values) -> str:
    return ' '.join(f'{v:g}' for v in values)


def report_input(loaded) -> dict[str, Any]:
    """The ``normalization`` record of ``eval --json`` for a ``LoadedModel``; says the choice on stderr.

    ``{'mean', 'std', 'source', 'file'}``, plus ``'sources'`` per value when mean and std come from different
    places (``source='mixed'``).
    """
    for note in loaded.notes:
        _note(note)
    sources = {k: _JSON_SOURCE[loaded.sources[k]] for k in ('mean', 'std')}
    common = sources['mean'] if sources['mean'] == sources['std'] else 'mixed'
    files = [loaded.files.get(loaded.sources[k]) for k in ('mean', 'std')]
    normalization: dict[str, Any] = {
        'mean': list(loaded.mean),
        'std': list(loaded.std),
        'source': common,
        'file': next((f for f in files if f), None),
    }
    if common == 'mixed':
        normalization['sources'] = dict(sources)

    def where(key: str) -> str:
        source = loaded.sources[key]
        file = loaded.files.get(source)
        return {
            'override': '--img-size' if key == 'input_size' else 'the --mean/--std flags',
            'checkpoint metadata': f'the checkpoint ({file})',
            'config.json': f'the checkpoint ({file})',
            'run config.yaml': f'the run config beside the checkpoint ({file})',
        }.get(source, f"{loaded.architecture}'s pretrained_cfg")

    origin = where('mean') if common != 'mixed' else f'mean from {where("mean")}, std from {where("std")}'
    text = f'normalisation mean {_rgb(loaded.mean)}, std {_rgb(loaded.std)} from {origin}'
    size_source = _JSON_SOURCE[loaded.sources['input_size']]
    if size_source == common and common != 'flag':
        text = f'input {loaded.img_size} px, {text}'
    else:
        text += f'; input {loaded.img_size} px from {where("input_size")}'
    no_record = not ({'checkpoint metadata', 'run config.yaml', 'config.json'} & set(loaded.sources.values()))
    if loaded.weights_file is not None and 'pretrained_cfg' in sources.values() and no_record:
        text = (
            f'warning: {loaded.weights_file} records no training normalisation (pass --mean/--std if it was '
            f'trained with values other than the model default): {text}'
        )
    _note(text)
    return normalization
