"""timm-adl train RECIPE [key=value ...] [--resume]: train a recipe (a YAML file or a packaged name).

Many processes: torchrun --nproc_per_node N -m timm_adl train RECIPE.yaml (DistributedDataParallel,
gloo on CPU, nccl on GPU); batch_size is the global batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import CliError
from ._flags import DATA_DIR_HELP, add_data_dir, add_device, add_json, write_json

HELP_EPILOG = """examples:
  timm-adl train cub/resnet50_se_adl data.root=/data/CUB_200_2011/images data.metadata_root=/data/CUB_200_2011/metadata
  timm-adl train --list                                       # the packaged recipes (also: timm-adl recipes)
  timm-adl train recipe.yaml optim.lr=0.02 epochs=10 output_dir=runs/a
  timm-adl train cub/resnet50_se_adl --data-dir /data/CUB_200_2011/images --device cuda:1 --json summary.json
  timm-adl train recipe.yaml output_dir=runs/a --resume      # continue after an interruption
  torchrun --nproc_per_node 4 -m timm_adl train recipe.yaml   # DistributedDataParallel
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'train',
        help='train a recipe (YAML) with key=value overrides; checkpoints, validation, resume',
        description='Train a WSOL recipe: validate every eval_every epochs with the WSOL metrics, keep the best '
        'checkpoint by select_metric (on val or train-fullsup), write everything to output_dir.',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        'recipe', nargs='?', help='recipe: a YAML file, or a packaged recipe name such as cub/resnet50_se_adl'
    )
    p.add_argument(
        'overrides', nargs='*', metavar='key=value', help='override recipe keys, dotted (optim.lr=0.1)'
    )
    p.add_argument(
        '--resume', action='store_true', help='continue the run in output_dir from its last checkpoint'
    )
    add_data_dir(p, help=DATA_DIR_HELP + " (sets data.root; default: the recipe's)")
    add_device(
        p,
        default=None,
        help="torch device: auto (CUDA when present, else cpu), cpu, cuda or cuda:N; sets the recipe's device "
        "key (default: the recipe's, which is auto unless the recipe says otherwise)",
    )
    add_json(
        p, help="write the run's summary (best and final metrics, files) as JSON to PATH ('-' prints it)"
    )
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--print-config', action='store_true', help='print the resolved config and exit')
    p.add_argument('--list', action='store_true', help='list the packaged recipes and exit')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..train import ConfigError, config_to_dict, load_config, run_training
    from ..train.recipes import resolve_recipe

    if args.list:
        return print_recipes(args.json)
    if args.recipe is None:
        raise CliError('a recipe is needed: a YAML file or a packaged name (timm-adl train --list)')
    cfg = load_config(resolve_recipe(args.recipe), [*args.overrides, *_flag_overrides(args)])
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end='')
        return 0
    if args.resume and not Path(cfg.output_dir).is_dir():
        raise ConfigError(
            f'--resume: output_dir {cfg.output_dir} does not exist, so there is no run to continue'
        )
    result = run_training(cfg, resume=args.resume, progress=not args.no_progress)
    if args.json:
        write_json(args.json, result)
    return 0


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """--data-dir and --device as the recipe keys they set (after the key=value overrides: flags win)."""
    out = []
    if args.data_dir is not None:
        out.append(f'data.root={args.data_dir}')
    if args.device is not None:
        out.append(f'device={args.device}')
    return out


def print_recipes(json_path: str | None = None) -> int:
    """One line per packaged recipe: its name (what ``timm-adl train`` takes) and its summary; with
    ``json_path``, ``[{"name", "summary"}]`` as JSON instead."""
    from ..train.recipes import list_recipes

    recipes = list_recipes()
    if json_path:
        write_json(json_path, [{'name': r.name, 'summary': r.summary} for r in recipes])
        return 0
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f'{r.name:<{width}}  {r.summary}'.rstrip())
    return 0
