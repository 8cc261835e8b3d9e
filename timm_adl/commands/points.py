"""``timm-adl points MODEL``: the table of places where ``timm_adl.insert`` can put ADL in a timm model."""

from __future__ import annotations

import argparse
import difflib
import json

from ..cli import CliError

HELP_EPILOG = """examples:
  timm-adl points resnet50
  timm-adl points inception_v3 --input-size 3 299 299
  timm-adl points convnext_atto --aliases          # only pool1..poolN and last
  timm-adl points vgg16 --json                     # machine-readable
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'points',
        help='list where ADL can be inserted in a timm model (aliases, node names, shapes, strides)',
        description='Build MODEL (random init), trace it with torch.fx and list every block boundary with a '
        'spatial (N, C, H, W) output: its alias (pool1..poolN, last), FX node name, module path for '
        '`timm_adl.insert(model, after=[...])`, output shape and stride.',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('model', help='timm model name (any name timm.create_model accepts, incl. *_adl models)')
    p.add_argument(
        '--input-size',
        nargs=3,
        type=int,
        metavar=('C', 'H', 'W'),
        help="input size to probe shapes with (default: the model's pretrained_cfg input_size)",
    )
    p.add_argument('--aliases', action='store_true', help='only the points that have an alias')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    p.add_argument(
        '--cam-offset',
        action='store_true',
        help='also measure where the reference resize draws the CAM relative to the true receptive-field '
        'centres of the last feature map (builds the model for real; 5-30 s on a CPU)',
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import timm
    import torch

    from ..points import analyse
    from ..surgery import adl_points

    input_size = tuple(args.input_size) if args.input_size else None
    try:
        with torch.device('meta'):  # shapes only: no memory, no weight init
            model = timm.create_model(args.model, pretrained=False)
        points = analyse(model, input_size).candidates()
    except RuntimeError as err:
        if 'Unknown model' in str(err):
            close = difflib.get_close_matches(args.model, timm.list_models(), n=5, cutoff=0.6)
            hint = f' (closest: {", ".join(close)})' if close else ''
            raise CliError(f'unknown timm model {args.model!r}{hint}') from None
        model, points = None, None
    except Exception:
        model, points = None, None
    if points is None:  # an op without a meta kernel: build the model for real
        model = timm.create_model(args.model, pretrained=False)
        try:
            points = analyse(model, input_size).candidates()
        except Exception as err:
            raise CliError(f'cannot analyse {args.model}: {err}') from None
    if args.aliases:
        points = [p for p in points if p.alias]
    if args.json:
        print(json.dumps([_as_dict(p) for p in points], indent=1))
        return 0
    rows = [('alias', 'node', 'module (insert after=)', 'shape (C, H, W)', 'stride')]
    rows += [
        (p.alias or '', p.node, p.module or '(functional)', 'x'.join(map(str, p.shape)), str(p.stride))
        for p in points
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print(
            '  '.join(
                cell.rjust(w) if j == 4 else cell.ljust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print('  '.join('-' * w for w in widths))
    existing = adl_points(model)
    if existing:
        print(f'\n{args.model} already holds ADL after: {", ".join(existing)}')
    if args.cam_offset:
        from ..cam import format_cam_geometry

        real = timm.create_model(args.model, pretrained=False).eval()
        print(
            '\n'
            + format_cam_geometry(real, input_size or real.pretrained_cfg.get('input_size', (3, 224, 224)))
        )
    return 0


def _as_dict(point) -> dict:
    return {
        'alias': point.alias,
        'node': point.node,
        'module': point.module,
        'shape': list(point.shape),
        'stride': point.stride,
    }
