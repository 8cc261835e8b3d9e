"""``timm-adl points --model NAME``: the table of places where ``timm_adl.insert`` can put ADL in a timm model."""

from __future__ import annotations

import argparse
import difflib

from ..cli import CliError
from ._flags import add_img_size, add_json, add_model, deprecated_alias, warn_deprecated, write_json

HELP_EPILOG = """examples:
  timm-adl points --model resnet50
  timm-adl points --model inception_v3 --img-size 299
  timm-adl points --model convnext_atto --aliases          # only pool1..poolN and last
  timm-adl points --model vgg16 --json points.json         # machine-readable (--json alone prints it)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'points',
        help='list where ADL can be inserted in a timm model (aliases, node names, shapes, strides)',
        description='Build the model (random init), trace it with torch.fx and list every block boundary with '
        'a spatial (N, C, H, W) output: its alias (pool1..poolN, last), FX node name, module path for '
        'timm_adl.insert(model, after=[...]), output shape and stride.',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model(p, help='timm model name (any name timm.create_model accepts, incl. *_adl models)')
    p.add_argument('old_model', nargs='?', help=argparse.SUPPRESS)  # the positional spelling, deprecated
    add_img_size(
        p, "input side in pixels to probe shapes with (default: the model's pretrained_cfg input_size)"
    )
    deprecated_alias(p, '--input-size', '--img-size N', 'input_size', nargs=3, type=int)
    p.add_argument('--aliases', action='store_true', help='only the points that have an alias')
    add_json(
        p, help="write the points as JSON to PATH instead of a table ('-', or --json alone, prints them)"
    )
    p.add_argument(
        '--cam-offset',
        action='store_true',
        help='also measure where the reference resize draws the CAM relative to the true receptive-field '
        'centres of the last feature map (builds the model for real; 5-30 s on a CPU)',
    )
    p.set_defaults(func=run)


def _model_name(args: argparse.Namespace) -> str:
    if args.old_model is not None:
        if args.model is not None:
            raise CliError(
                f'give the model once: --model {args.model} or the old positional {args.old_model}'
            )
        warn_deprecated(
            f'timm-adl points {args.old_model} (positional model name)', f'--model {args.old_model}'
        )
        return args.old_model
    if args.model is None:
        raise CliError('--model NAME is required (e.g. timm-adl points --model resnet50)')
    return args.model


def _input_size(args: argparse.Namespace, name: str) -> tuple[int, ...] | None:
    """(C, H, W) to probe: --img-size N keeps the model's channels; the old --input-size C H W is taken whole."""
    if getattr(args, 'input_size', None):
        return tuple(args.input_size)
    if args.img_size is None:
        return None
    if args.img_size < 1:
        raise CliError(f'--img-size must be >= 1, got {args.img_size}')
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    channels = cfg.input_size[0] if cfg is not None and cfg.input_size else 3
    return (channels, args.img_size, args.img_size)


def run(args: argparse.Namespace) -> int:
    import timm
    import torch

    from ..points import analyse
    from ..surgery import adl_points

    args.model = _model_name(args)
    input_size = _input_size(args, args.model)
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
        write_json(args.json, [_as_dict(p) for p in points])
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
