"""timm-adl recipes: list the packaged training recipes, one line each (name and summary)."""

from __future__ import annotations

import argparse

from ._flags import add_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'recipes',
        help='list the packaged training recipes (names for timm-adl train)',
        description='List the recipes shipped with timm-adl: each name works as timm-adl train NAME; '
        'timm-adl train NAME --print-config shows one in full.',
        epilog='examples:\n  timm-adl recipes\n  timm-adl recipes --json recipes.json\n'
        '  timm-adl train cub/resnet50_se_adl --print-config',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json(p, help="write the recipes as JSON ([{name, summary}]) to PATH ('-' prints them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .train import print_recipes

    return print_recipes(args.json)
