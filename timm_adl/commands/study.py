"""timm-adl study: run a grid of recipes x overrides x seeds from one study file, resumably, and report.

Every (cell, seed) trains with the project's trainer in OUT/runs/<cell>/seed<k>/, is scored on the study's
split (Top-1 Clas, GT-known Loc, Top-1 Loc at the recipe's threshold; MaxBoxAcc, MaxBoxAccV2) and leaves a
result.json; OUT/report.md and OUT/report.json give mean ± sd over seeds per cell, OUT/figures/ a Figure-3
picture per cell. Run the same command again after a kill: finished runs are kept, the rest continue.
"""

from __future__ import annotations

import argparse

from ._flags import add_data_dir, add_device, add_json, default_output, write_json

__all__ = ['register', 'run']

HELP_EPILOG = """examples:
  timm-adl study --list                                  # the shipped studies
  timm-adl study synthetic/table1                        # paper Table 1 on the synthetic set (CPU or GPU)
  timm-adl study synthetic/paper --seeds 0 1 2           # Tables 1-3; kill it and rerun to continue
  timm-adl study synthetic/table3 --cells cam adl        # some cells only (and what they depend on)
  timm-adl study cub/table3 --data-dir data/CUB_200_2011/images --metadata-root metadata/CUB --device cuda
  timm-adl study my_study.yaml --out runs/study/mine --report-only   # rebuild the report
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'study',
        help='run a grid of recipes x overrides x seeds (the paper tables) and report mean ± sd',
        description=__doc__.split('\n\n')[0] + '\n\n' + __doc__.split('\n\n')[1],
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('study', nargs='?', metavar='STUDY', help='a study file (YAML) or a shipped study name')
    p.add_argument(
        '--out',
        default=None,
        metavar='DIR',
        help=f'study folder (default: {default_output("study", "NAME")})',
    )
    p.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        metavar='SEED',
        help="training seeds of every cell that does not fix its own (default: the study file's)",
    )
    p.add_argument('--cells', nargs='+', metavar='CELL', help='run only these cells (and the cells they use)')
    add_data_dir(
        p,
        help='data set root: the folder holding the images, for cells reading a data set on disk (CUB); '
        "sets their data.root (default: the study file's, else the recipe's); synthetic cells make their own",
    )
    p.add_argument(
        '--metadata-root',
        metavar='DIR',
        help="wsolevaluation metadata root for those cells (sets data.metadata_root; default: the study file's, "
        "else the recipe's)",
    )
    add_device(p)
    p.add_argument(
        '--report-only', action='store_true', help='train nothing: rebuild the report from finished runs'
    )
    p.add_argument('--list', action='store_true', help='list the shipped studies and exit')
    p.add_argument(
        '--figure-images',
        type=int,
        default=8,
        metavar='N',
        help='test images per Figure-3 picture (default: 8)',
    )
    p.add_argument('--no-progress', action='store_true', help='no per-epoch progress bars')
    add_json(p, help="also write the report as JSON to PATH ('-' prints it)")
    p.set_defaults(func=run)


def _list(json_path: str | None) -> int:
    from ..study import list_studies

    studies = list_studies()
    if json_path:
        write_json(json_path, [{'name': s.name, 'summary': s.summary} for s in studies])
        return 0
    width = max((len(s.name) for s in studies), default=0)
    for s in studies:
        print(f'{s.name:<{width}}  {s.summary}')
    return 0


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from ..study import check_study, load_study, run_study

    if args.list:
        return _list(args.json)
    if not args.study:
        raise CliError('give a STUDY (a study file or a shipped name; --list shows them)')
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        raise CliError(f'--seeds has repeats: {args.seeds}')
    if args.figure_images < 0:
        raise CliError(f'--figure-images must be >= 0, got {args.figure_images}')
    spec = load_study(args.study, seeds=args.seeds, check=False)
    if args.cells:
        spec = spec.select(args.cells)
    check_study(spec)  # the cells that will run: their recipes and overrides load
    out = args.out or default_output('study', spec.name)
    result = run_study(
        spec,
        out,
        device=args.device,
        data_dir=args.data_dir,
        metadata_dir=args.metadata_root,
        progress=not args.no_progress,
        report_only=args.report_only,
        figure_images=args.figure_images,
    )
    if args.json:
        write_json(args.json, result.to_dict())
    return 0
