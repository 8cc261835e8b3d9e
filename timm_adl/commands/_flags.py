"""The flags every ``timm-adl`` subcommand shares, defined once: same name, type, default and help everywhere.

``tests/test_cli_flags.py`` walks every registered subcommand and checks these. Old spellings stay as
hidden aliases for one release and print a one-line deprecation warning on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = [
    'DEFAULT_OUTPUT_ROOT',
    'DEVICE_DEFAULT',
    'add_cam_method',
    'add_cam_threshold',
    'add_data_dir',
    'add_device',
    'add_img_size',
    'add_json',
    'add_model',
    'choice_metavar',
    'default_output',
    'deprecated_alias',
    'resolve_device',
    'write_json',
]

DEVICE_DEFAULT = 'auto'
DEFAULT_OUTPUT_ROOT = 'runs'  # every command's default output folder is runs/<command>
CAM_THRESHOLD_DEFAULT = 0.2
DATA_DIR_HELP = (
    'data set root: the folder holding the images (and, for cub/imagenet, their annotation files); '
    'the same folder a recipe names as data.root'
)


def default_output(command: str, *parts: str) -> str:
    """``runs/<command>[/parts]``: where a command writes when not told (one rule for every command)."""
    return '/'.join((DEFAULT_OUTPUT_ROOT, command, *parts))


def choice_metavar(choices: Any) -> str:
    return '{' + ','.join(choices) + '}'


def warn_deprecated(old: str, new: str) -> None:
    print(
        f'timm-adl: warning: {old} is deprecated and will be removed in the next release; use {new}',
        file=sys.stderr,
    )


class _Deprecated(argparse.Action):
    """Stores into the new flag's dest and warns once per use."""

    def __init__(self, option_strings, dest, new: str = '', convert=None, **kwargs):
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(option_string or self.dest, self.new)
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def deprecated_alias(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, convert=None, **kwargs: Any
) -> None:
    """``old`` still parses (hidden from --help) into ``dest``, with a warning naming ``new``."""
    parser.add_argument(
        old, dest=dest, action=_Deprecated, new=new, convert=convert, help=argparse.SUPPRESS, **kwargs
    )


def add_model(parser: argparse.ArgumentParser, required: bool = False, help: str | None = None) -> None:
    parser.add_argument(
        '--model',
        metavar='NAME',
        required=required,
        help=help or 'timm model name, e.g. resnet50_se_adl (any name timm.create_model accepts)',
    )


def add_json(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        '--json',
        metavar='PATH',
        nargs='?',
        const='-',
        help=help or "write the results as JSON to PATH ('-', or --json alone, prints them)",
    )


def add_img_size(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument('--img-size', type=int, metavar='N', help=help)


def add_cam_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--cam-threshold',
        type=float,
        default=CAM_THRESHOLD_DEFAULT,
        metavar='T',
        help='box threshold, a fraction of the CAM max in [0, 1): the paper protocol keeps the largest '
        f'region above it (default {CAM_THRESHOLD_DEFAULT})',
    )


def add_device(
    parser: argparse.ArgumentParser, default: str | None = DEVICE_DEFAULT, help: str | None = None
) -> None:
    parser.add_argument(
        '--device',
        default=default,
        metavar='DEVICE',
        help=help or 'torch device: auto (CUDA when present, else cpu), cpu, cuda or cuda:N (default: auto)',
    )


def add_data_dir(parser: argparse.ArgumentParser, required: bool = False, help: str | None = None) -> None:
    parser.add_argument('--data-dir', metavar='DIR', required=required, help=help or DATA_DIR_HELP)


def add_cam_method(parser: argparse.ArgumentParser) -> None:
    from ..cam import CAM_METHODS

    parser.add_argument(
        '--cam-method',
        default=None,
        metavar=choice_metavar(CAM_METHODS),
        help="how the maps are made: 'cam' (the reference CAM; the head applied per feature cell for "
        "other heads) or 'gradcam' (Grad-CAM, any head) (default: the recipe's cam_method the checkpoint "
        "was trained with, else 'cam')",
    )


def resolve_device(name: str | None):
    """``auto`` (or None): CUDA when present, else cpu; any other name must work here."""
    import torch

    from ..cli import CliError

    if name is None or name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise CliError(f'--device {name!r} is not usable here: {str(err).splitlines()[0]}') from None
    return device


def write_json(path: str, data: Any) -> None:
    """``--json PATH``: the data as JSON, written whole (atomic) to PATH, or printed for ``-``."""
    import json
    from pathlib import Path

    from ..files import atomic_write_bytes

    text = json.dumps(data, indent=1) + '\n'
    if path == '-':
        print(text, end='')
        return
    atomic_write_bytes(Path(path), text.encode(), durable=False)
    print(f'wrote {path}')
