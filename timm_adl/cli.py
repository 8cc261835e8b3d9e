"""The ``timm-adl`` command line: ``timm-adl <command> --help`` for each command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .version import __version__

# Subcommand modules under timm_adl.commands, in the order --help lists them.
COMMANDS: tuple[str, ...] = ('train', 'recipes', 'data', 'reproduce', 'points', 'push', 'eval', 'cam', 'demo')


class CliError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-adl',
        description='ADL (Attention-based Dropout Layer) for timm models, and WSOL evaluation and training.',
    )
    parser.add_argument('--version', action='version', version=f'timm-adl {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in COMMANDS:
        importlib.import_module(f'.commands.{name}', __package__).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, 'func', None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        print(f'timm-adl {args.command}: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    raise SystemExit(main())
