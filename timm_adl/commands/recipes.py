"""``timm-adl recipes``: list the packaged training recipes, one line each (name and summary)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'recipes',
        help='list the packaged training recipes (names for timm-adl train)',
        description='List the recipes shipped with timm-adl: each name works as `timm-adl train NAME`; '
        '`timm-adl train NAME --print-config` shows one in full.',
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .train import print_recipes

    return print_recipes()
