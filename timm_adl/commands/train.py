"""``timm-adl train RECIPE [key=value ...] [--resume]``: train a recipe (a YAML file or a packaged name).

Many processes: ``torchrun --nproc_per_node N -m timm_adl train RECIPE.yaml`` (DistributedDataParallel,
gloo on CPU, nccl on GPU); ``batch_size`` is the global batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import CliError

HELP_EPILOG = """examples:
  timm-adl train cub/resnet50_se_adl data.root=/data/CUB_200_2011/images data.metadata_root=/data/CUB_200_2011/metadata
  timm-adl train --list                                       # the packaged recipes (also: timm-adl recipes)
  timm-adl train recipe.yaml optim.lr=0.02 epochs=10 output_dir=runs/a
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
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--print-config', action='store_true', help='print the resolved config and exit')
    p.add_argument('--list', action='store_true', help='list the packaged recipes and exit')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..hub.checkpoints import CorruptCheckpointError
    from ..train import ConfigError, config_to_dict, load_config, run_training
    from ..train.recipes import resolve_recipe

    if args.list:
        return print_recipes()
    if args.recipe is None:
        raise CliError('a recipe is needed: a YAML file or a packaged name (timm-adl train --list)')
    try:
        cfg = load_config(resolve_recipe(args.recipe), args.overrides)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end='')
            return 0
        if args.resume and not Path(cfg.output_dir).is_dir():
            raise ConfigError(
                f'--resume: output_dir {cfg.output_dir} does not exist, so there is no run to continue'
            )
        run_training(cfg, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, CorruptCheckpointError) as err:
        raise CliError(str(err)) from None
    return 0


def print_recipes() -> int:
    """One line per packaged recipe: its name (what ``timm-adl train`` takes) and its summary."""
    from ..train.recipes import list_recipes

    recipes = list_recipes()
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f'{r.name:<{width}}  {r.summary}'.rstrip())
    return 0
