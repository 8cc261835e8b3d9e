"""``timm-adl reproduce --dataset cub --backbone resnet50_se``: one paper row (CAM and ADL) in one command.

The work is :func:`timm_adl.reproduce.run_reproduction`; this module only turns flags into its config.
"""

from __future__ import annotations

import argparse
import json

from ..cli import CliError

HELP_EPILOG = """examples:
  timm-adl data cub data/                                        # once: CUB-200-2011 with its metadata
  timm-adl reproduce --dataset cub --backbone resnet50_se --data-dir data/
  timm-adl reproduce --dataset cub --backbone resnet50_se --data-dir data/ --resume   # after an interruption
  timm-adl reproduce --dataset cub --backbone vgg16_gap --data-dir data/ --push my-org --dry-run hub/
  timm-adl reproduce --dataset imagenet --backbone inception_v3 --data-dir data/ --push my-org

Writes OUT/comparison.md, OUT/comparison.json and OUT/figure3.png (OUT defaults to
runs/reproduce/<dataset>/<backbone>); the two training runs are OUT/runs/cam and OUT/runs/adl.
--set KEY=VALUE overrides a recipe key of both arms (e.g. epochs=1 for a smoke run), --set-cam / --set-adl
one arm only; the published figures compared against always come from --dataset and --backbone.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..reproduce import BACKBONES, DATASETS
    from ._flags import add_data_dir, add_device, add_json, choice_metavar

    p = subparsers.add_parser(
        'reproduce',
        help="train a backbone's CAM and ADL recipes, evaluate both and compare them with the papers",
        description='Train the packaged CAM and ADL recipes of one backbone, evaluate both on test (CAM '
        'threshold picked on the validation split, and the oracle), and write a comparison with the ADL '
        "paper's Table 3 and wsolevaluation's table, with the paper's Figure 3.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('--dataset', required=True, metavar=choice_metavar(DATASETS), help='the data set')
    p.add_argument(
        '--backbone',
        required=True,
        metavar=choice_metavar(BACKBONES),
        help='the paper backbone whose CAM and ADL recipes are trained',
    )
    add_data_dir(p, help='data set root: the folder `timm-adl data DATASET DIR` prepared')
    p.add_argument(
        '--out', metavar='DIR', help='output folder (default runs/reproduce/DATASET/BACKBONE); one per run'
    )
    for flag, who in (('--set', 'both arms'), ('--set-cam', 'the CAM arm'), ('--set-adl', 'the ADL arm')):
        p.add_argument(
            flag,
            nargs='+',
            action='append',
            default=[],
            metavar='KEY=VALUE',
            help=f'recipe overrides for {who}, dotted keys (e.g. epochs=1 model=resnet10t)',
        )
    p.add_argument('--push', metavar='ORG', help='publish both checkpoints with their cards under ORG')
    p.add_argument(
        '--dry-run', metavar='DIR', help='with --push: write the two Hub folders here, upload nothing'
    )
    p.add_argument('--resume', action='store_true', help='continue an interrupted reproduction in --out')
    add_device(p)
    add_json(p, help="also write the comparison JSON to PATH ('-', or --json alone, prints it)")
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.set_defaults(func=run)


def _flat(groups: list[list[str]]) -> tuple[str, ...]:
    return tuple(item for group in groups for item in group)


def run(args: argparse.Namespace) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from ..reproduce import ReproduceConfig, run_reproduction
    from ._flags import write_json

    config = ReproduceConfig(
        dataset=args.dataset,
        backbone=args.backbone,
        data_dir=args.data_dir,
        out=args.out,
        overrides=_flat(args.set),
        cam_overrides=_flat(args.set_cam),
        adl_overrides=_flat(args.set_adl),
        push_org=args.push,
        hub_dry_run=args.dry_run,
        resume=args.resume,
        device=None if args.device == 'auto' else args.device,  # auto: the recipes' own device key
        progress=not args.no_progress,
    )
    try:
        result = run_reproduction(config)
    except HfHubHTTPError as err:  # names the organisation; every other error is cli.main's one line
        raise CliError(f'upload to {args.push} failed: {str(err).splitlines()[0]}') from None
    print(result.markdown.read_text(encoding='utf-8').split('\n\n')[1])
    print(f'wrote {result.markdown}, {result.json}, {result.figure}')
    if args.json:
        write_json(args.json, json.loads(result.json.read_text(encoding='utf-8')))
    return 0
