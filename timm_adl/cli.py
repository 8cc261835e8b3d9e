"""The ``timm-adl`` command line: ``timm-adl <command> --help`` for each command.

Every user error becomes one line on stderr and exit code 2 here, in ``main``, and nowhere else: the
commands raise (``CliError`` for a bad flag, the library's own errors for bad files and values) and
``USER_ERRORS`` says which exceptions are the user's to fix.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .version import __version__

# Subcommand modules under timm_adl.commands, in the order --help lists them.
COMMANDS: tuple[str, ...] = (
    'train',
    'recipes',
    'data',
    'reproduce',
    'points',
    'push',
    'eval',
    'cam',
    'demo',
    'study',
)


class CliError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input, not a bug: the project's errors (``ConfigError``,
    ``CorruptCheckpointError``, ``CheckpointNotPublishedError``, ``WSOLDataError``, ``DownloadError``, all
    ``ValueError`` / ``OSError`` subclasses, as are the Hub's HTTP errors), plus the built-in ones the
    library raises for a bad value or a missing file."""
    return (CliError, ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-adl',
        description='ADL (Attention-based Dropout Layer) for timm models, and WSOL evaluation and training.',
        epilog='example:\n  timm-adl demo --tiny          # a CAM and an ADL model on synthetic data, compared',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('--version', action='version', version=f'timm-adl {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in COMMANDS:
        importlib.import_module(f'.commands.{name}', __package__).register(subparsers)
    return parser


def error_line(err: BaseException) -> str:
    """The first line of an error's message (a Hub or safetensors error may run to many)."""
    text = str(err).strip()
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    return text.splitlines()[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, 'func', None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        if os.environ.get('TIMM_ADL_TRACEBACK'):  # for debugging: the full traceback instead of one line
            raise
        print(f'timm-adl {args.command}: error: {error_line(err)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    raise SystemExit(main())
