"""``timm-adl eval``: CAMs of a model on a WSOL data set, every localization metric, pictures and score maps."""

from __future__ import annotations

import argparse
import difflib
import io
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..cli import CliError
from ..files import atomic_write_bytes
from ..train.run_layout import WEIGHTS_CHOICES
from ._flags import (
    add_cam_method,
    add_cam_threshold,
    add_data_dir,
    add_device,
    add_img_size,
    add_json,
    add_model,
    choice_metavar,
    default_output,
    deprecated_alias,
    resolve_device,
    write_json,
)
from ._inputs import normalization_flags, report_input

GT_BOX_MODES = ('all', 'first')
ALIGN_MODES = ('reference', 'centered')
# The formats timm_adl.data reads (checked against timm_adl.data.DATASET_NAMES by the tests).
DATASET_NAMES = ('cub', 'wsol-metadata', 'imagenet')


def add_align(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--align',
        default='reference',
        metavar=choice_metavar(ALIGN_MODES),
        help="CAM resize: reference (the references' corner-aligned resize, default) or centered",
    )


HELP_EPILOG = """examples:
  timm-adl eval --model resnet50_se_adl --checkpoint out/best.safetensors --data-dir CUB --dataset cub
  timm-adl eval --model vgg16_gap --checkpoint w.safetensors --data-dir data --dataset wsol-metadata \\
      --metadata-dir metadata/CUB --split test --threshold-from val --vis 16 --json results.json
  timm-adl eval --scoremaps other_tool/scoremaps --data-dir data --dataset wsol-metadata \\
      --metadata-dir metadata/CUB          # score maps saved as <image_id>.npy by another tool
  timm-adl eval --model resnet50 --checkpoint other_tool.safetensors --data-dir CUB --dataset cub \\
      --mean 0.5 0.5 0.5 --std 0.25 0.25 0.25   # weights that do not record their training normalisation

Inputs are normalised as the checkpoint was trained (recorded by `timm-adl train` in its weights, or in a
save_pretrained folder's config.json), else with the model's pretrained_cfg; --mean/--std override both.
"""

# ----------------------------------------------------------------------------------------------------
# shared by `eval` and `cam`


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model and input flags of ``eval`` and ``cam`` (what ``timm_adl.hub.load_model`` takes)."""
    add_model(
        parser,
        help='timm model name, e.g. resnet50_se_adl; optional when --checkpoint is a run folder, '
        'a save_pretrained folder, a Hub id or weights with config.yaml beside them',
    )
    parser.add_argument(
        '--checkpoint',
        metavar='PATH',
        help='weights: a .safetensors file (e.g. best.safetensors of timm-adl train), a run folder, a folder '
        'written by save_pretrained / timm-adl push, or a Hub id ORG/NAME; no pickles are loaded',
    )
    parser.add_argument(
        '--weights',
        default='best',
        choices=WEIGHTS_CHOICES,
        help='which weights of a run folder: best (default) or last',
    )
    parser.add_argument(
        '--num-classes',
        type=int,
        metavar='N',
        help='classes of the head (default: read from the checkpoint, else 1000)',
    )
    parser.add_argument(
        '--model-kwargs',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='extra timm.create_model kwargs, values in YAML (e.g. layers=[1,1,0,0] stem_width=16), '
        "as a training recipe's model_kwargs",
    )
    parser.add_argument(
        '--mean',
        nargs='+',
        metavar='V',
        help='input normalisation mean, R G B (default: what the checkpoint was trained with, as recorded by '
        "timm-adl train or a save_pretrained folder's config.json, else the model's pretrained_cfg)",
    )
    parser.add_argument(
        '--std', nargs='+', metavar='V', help='input normalisation std, R G B, each > 0 (default: as --mean)'
    )
    add_device(parser)


def parse_model_kwargs(items: list[str]) -> dict[str, Any]:
    """``['layers=[1,1,0,0]', 'stem_width=16']`` -> ``{'layers': [1, 1, 0, 0], 'stem_width': 16}`` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise CliError(f'--model-kwargs takes KEY=VALUE items, got {item!r}')
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise CliError(
                f'--model-kwargs {key}: cannot parse {value!r} ({str(err).splitlines()[0]})'
            ) from None
    return out


def load_model(args: argparse.Namespace, flags: dict[str, Any] | None = None):
    """The ``LoadedModel`` the flags name (``timm_adl.hub.load_model``), with its input settings; a model
    without weights is allowed, with a warning (its maps mean nothing)."""
    from ..hub import load_model as load

    if args.num_classes is not None and args.num_classes < 1:
        raise CliError(f'--num-classes must be >= 1, got {args.num_classes}')
    if args.checkpoint is None and not args.model:
        raise CliError('--model is required (unless --checkpoint is a run or save_pretrained folder)')
    flags = flags or {}
    loaded = load(
        args.checkpoint,
        model=args.model,
        num_classes=args.num_classes,
        model_kwargs=parse_model_kwargs(getattr(args, 'model_kwargs', []) or []),
        weights=getattr(args, 'weights', 'best'),
        img_size=getattr(args, 'img_size', None),
        mean=flags.get('mean'),
        std=flags.get('std'),
        cam_method=getattr(args, 'cam_method', None),
    )
    if args.checkpoint is None:
        print(
            f'timm-adl: warning: no --checkpoint: {args.model} has random weights, its CAMs mean nothing',
            file=sys.stderr,
        )
    return loaded


def paper_box(cam, threshold: float):
    """The paper protocol's box of one (H, W) map: largest contour above ``threshold`` * max, as (4,) ints."""
    import numpy as np

    from ..metrics import extract_boxes

    boxes = extract_boxes(np.asarray(cam, dtype=np.float32), [threshold], multi_contour=False)
    box = np.asarray(boxes[0], dtype=np.int64).reshape(-1, 4)[0]
    return box


def atomic_save_npy(path: Path, array) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue(), durable=False)


# ----------------------------------------------------------------------------------------------------
# eval


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'eval',
        help='CAM localization metrics of a model on a WSOL data set (Top-1 Loc, GT-known, MaxBoxAcc, V2, PxAP)',
        description='Compute the CAM of every image (ground-truth and top-1 class, one forward pass), extract '
        'boxes the wsolevaluation way and report Top-1 Clas, GT-known Loc and Top-1 Loc (paper protocol, fixed '
        'CAM threshold), MaxBoxAcc and MaxBoxAccV2 (fair protocol, best threshold) and PxAP (mask data).',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    add_data_dir(p, required=True)
    p.add_argument(
        '--dataset',
        required=True,
        metavar=choice_metavar(DATASET_NAMES),
        help='annotation format of --data-dir: cub (CUB-200-2011 files), wsol-metadata (wsolevaluation '
        'metadata, with --metadata-dir) or imagenet',
    )
    p.add_argument('--metadata-dir', metavar='DIR', help='wsol-metadata only: the folder of split folders')
    p.add_argument(
        '--mask-dir',
        metavar='DIR',
        help='wsol-metadata only: the folder mask paths are relative to (default: --data-dir)',
    )
    p.add_argument('--split', default='test', help='split to evaluate (default: test)')
    p.add_argument(
        '--threshold-from',
        metavar='SPLIT',
        help='pick the CAM threshold on SPLIT (e.g. val) and report the evaluated split at it, besides the '
        "oracle (the evaluated split's own best, as wsolevaluation does)",
    )
    add_cam_threshold(p)
    p.add_argument(
        '--cam-curve-interval',
        type=float,
        default=0.01,
        metavar='STEP',
        help='threshold grid step for MaxBoxAcc (default 0.01)',
    )
    p.add_argument(
        '--iou-thresholds',
        type=int,
        nargs='+',
        default=[30, 50, 70],
        metavar='PCT',
        help='IoU thresholds in percent for MaxBoxAccV2 (default: 30 50 70)',
    )
    p.add_argument(
        '--gt-box-mode',
        default='all',
        choices=GT_BOX_MODES,
        help='which ground-truth boxes count: all boxes of an image (default) or the first',
    )
    add_img_size(
        p,
        'evaluation resolution in pixels (default: the training input size the checkpoint records, '
        "else the model's input size, else 224)",
    )
    deprecated_alias(
        p, '--input-size', '--img-size N', 'img_size', convert=lambda v: int(v[-1]), nargs=3, type=int
    )
    add_align(p)
    add_cam_method(p)
    p.add_argument('--batch-size', type=int, default=32, metavar='N', help='images per batch (default 32)')
    p.add_argument('--workers', type=int, default=0, metavar='N', help='data loading processes (default 0)')
    p.add_argument(
        '--save-cams', metavar='DIR', help='write each normalised GT-class CAM to DIR/<image_id>.npy'
    )
    p.add_argument(
        '--scoremaps', metavar='DIR', help='evaluate score maps DIR/<image_id>.npy instead of a model'
    )
    p.add_argument(
        '--vis', type=int, default=0, metavar='N', help='write Figure-3 pictures of the first N images'
    )
    p.add_argument(
        '--vis-dir',
        metavar='DIR',
        default=default_output('eval', 'vis'),
        help=f'folder for --vis pictures (default: {default_output("eval", "vis")})',
    )
    add_json(p, help="write all results (metrics, curves, settings) as JSON to PATH ('-' prints them)")
    p.set_defaults(func=run)


def check_align(align: str) -> None:
    if align not in ALIGN_MODES:
        close = difflib.get_close_matches(align, ALIGN_MODES, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise CliError(f'--align must be one of {", ".join(ALIGN_MODES)}, got {align!r}{hint}')


def check_cam_method(method: str | None) -> None:
    from ..evaluation import check_cam_method as check

    if method is not None:
        try:
            check(method)
        except ValueError as err:
            raise CliError(f'--cam-method: {err}') from None


def _check_args(args: argparse.Namespace) -> None:

    if args.dataset not in DATASET_NAMES:
        close = difflib.get_close_matches(args.dataset, DATASET_NAMES, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise CliError(f'--dataset {args.dataset!r} is not one of {", ".join(DATASET_NAMES)}{hint}')
    if not os.path.isdir(args.data_dir):
        raise CliError(f'--data-dir not found: {args.data_dir}')
    if args.scoremaps and (args.model or args.checkpoint):
        raise CliError('give either --scoremaps or a model (--model/--checkpoint), not both')
    if not args.scoremaps and not (args.model or args.checkpoint):
        raise CliError('--model (or --checkpoint) is required, or --scoremaps DIR')
    if args.scoremaps and (args.mean is not None or args.std is not None):
        raise CliError('--mean/--std set the input normalisation of a model; --scoremaps evaluates no model')
    if args.scoremaps and not os.path.isdir(args.scoremaps):
        raise CliError(f'--scoremaps folder not found: {args.scoremaps}')
    if not 0.0 <= args.cam_threshold < 1.0:
        raise CliError(f'--cam-threshold must be in [0, 1), got {args.cam_threshold}')
    if not 0.0 < args.cam_curve_interval < 1.0:
        raise CliError(f'--cam-curve-interval must be in (0, 1), got {args.cam_curve_interval}')
    if any(not 0 < t <= 100 for t in args.iou_thresholds):
        raise CliError(f'--iou-thresholds must be percentages in (0, 100], got {args.iou_thresholds}')
    if args.batch_size < 1:
        raise CliError(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.vis < 0:
        raise CliError(f'--vis must be >= 0, got {args.vis}')
    check_align(args.align)
    if args.scoremaps and args.cam_method is not None:
        raise CliError('--cam-method chooses how a model makes its maps; --scoremaps evaluates no model')
    check_cam_method(args.cam_method)
    if args.threshold_from is not None and args.threshold_from == args.split:
        raise CliError(
            f'--threshold-from {args.threshold_from} is the evaluated split itself (that is the oracle)'
        )


def _safe_name(image_id: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '_', image_id)


def _load_scoremap(folder: str, image_id: str, hw: tuple[int, int]):
    import numpy as np

    path = Path(folder) / f'{image_id}.npy'
    if not path.is_file():
        raise CliError(f'score map of {image_id!r} not found: {path}')
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise CliError(f'cannot read score map {path}: {err}') from None
    if arr.shape != hw or not np.issubdtype(arr.dtype, np.floating):
        raise CliError(
            f'score map {path} must be a float ({hw[0]}, {hw[1]}) array, got {arr.dtype} {arr.shape}'
        )
    if np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1:
        raise CliError(f'score map {path} must be in [0, 1] without NaN (normalise it first)')
    return arr.astype(np.float32)


class _Run:
    """The data side of one split (data set, loader, pictures, saved maps) around ``timm_adl.evaluate``."""

    def __init__(self, args: argparse.Namespace, model, device, img_size, mean, std, cam_method=None):
        self.cam_method = cam_method
        self.args, self.model, self.device = args, model, device
        self.img_size, self.mean, self.std = img_size, mean, std

    def _loader(self, split: str):
        from ..data import create_wsol_dataset, create_wsol_loader

        args = self.args
        ds = create_wsol_dataset(
            args.dataset,
            args.data_dir,
            split,
            is_training=False,
            img_size=self.img_size,
            mean=self.mean,
            std=self.std,
            metadata_root=args.metadata_dir,
            gt_box_mode=args.gt_box_mode,
            **({'mask_root': args.mask_dir} if args.mask_dir else {}),
        )
        if len(ds) == 0:
            raise CliError(f'split {split!r} of {args.data_dir} has no images')
        if not (ds.has_boxes or ds.has_masks):
            raise CliError(f'split {split!r} has no boxes or masks to evaluate localization against')
        if args.threshold_from and not ds.has_boxes:
            raise CliError(f'--threshold-from calibrates box metrics; split {split!r} has masks, no boxes')
        return ds, create_wsol_loader(ds, args.batch_size, is_training=False, num_workers=args.workers)

    def evaluate(self, split: str, *, outputs: bool):
        """``(WSOLResult, number of images)`` of ``split``; with ``outputs`` also the maps and pictures."""
        import numpy as np
        import torch

        from ..evaluation import evaluate, evaluate_scoremaps

        args = self.args
        ds, loader = self._loader(split)
        ids = ds.image_ids
        vis_items: list[tuple] = []

        def on_batch(b) -> None:
            batch_ids = ids[b.start : b.start + len(b.images)]
            if outputs and args.save_cams:
                for image_id, cam in zip(batch_ids, b.cams.numpy(), strict=True):
                    atomic_save_npy(Path(args.save_cams) / f'{image_id}.npy', cam)
            top1 = None if b.cam_result is None else b.cam_result.top1.cpu()
            for k in range(min((args.vis if outputs else 0) - len(vis_items), len(b.images))):
                vis_items.append(
                    (
                        b.images[k],
                        b.cams[k],
                        b.boxes[k],
                        batch_ids[k],
                        int(b.labels[k]),
                        None if top1 is None else int(top1[k]),
                    )
                )

        settings = dict(
            cam_threshold=args.cam_threshold,
            cam_thresholds=np.arange(0, 1, args.cam_curve_interval),
            iou_thresholds=tuple(args.iou_thresholds),
            gt_box_mode=args.gt_box_mode,
            on_batch=on_batch,
            progress=f'eval {split}',
        )
        if self.model is not None:
            result = evaluate(
                self.model,
                loader,
                cam_method=self.cam_method,
                align=args.align,
                device=self.device,
                **settings,
            )
        else:

            def maps(start: int, batch) -> torch.Tensor:
                hw = tuple(batch[0].shape[-2:])
                batch_ids = ids[start : start + len(batch[0])]
                return torch.from_numpy(np.stack([_load_scoremap(args.scoremaps, i, hw) for i in batch_ids]))

            result = evaluate_scoremaps(loader, maps, **settings)
        if vis_items:
            self._write_vis(vis_items)
        return result, len(ds)

    def _write_vis(self, items: list[tuple]) -> None:
        from ..viz import cam_figure, cam_grid, save_png

        folder = Path(self.args.vis_dir)
        pred_boxes = [paper_box(cam.numpy(), self.args.cam_threshold)[None] for _, cam, *_ in items]
        for k, ((image, cam, boxes, image_id, label, top1), pred) in enumerate(
            zip(items, pred_boxes, strict=True)
        ):
            title = f'{image_id}  gt {label}' + ('' if top1 is None else f'  top-1 {top1}')
            fig = cam_figure(image, cam, boxes, pred, mean=self.mean, std=self.std, title=title)
            save_png(fig, folder / f'{k:04d}_{_safe_name(image_id)}.png')
        grid = cam_grid(
            [i[0] for i in items],
            [i[1] for i in items],
            [i[2] for i in items],
            pred_boxes,
            mean=self.mean,
            std=self.std,
        )
        save_png(grid, folder / 'grid.png')


def _scalar(value: Any) -> Any:
    """JSON-friendly copies: numpy arrays/scalars to lists/floats, int keys kept as strings by json."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _scalar(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scalar(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def summarise(r) -> dict[str, Any]:
    """The scalar metrics of an evaluation (percent), the public names first, then the thresholds."""
    return r.summary()


def _format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k.ljust(width)}  {v}' for k, v in rows)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return 'n/a' if math.isnan(v) else f'{v:.2f}'
    if isinstance(v, dict):
        return ', '.join(f'{k}: {_fmt(x)}' for k, x in v.items())
    return str(v)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    flags = normalization_flags(args)

    model, device, normalization, cam_method = None, None, None, None
    if not args.scoremaps:
        loaded = load_model(args, flags)
        device = resolve_device(args.device)
        model = loaded.model.to(device)
        normalization = report_input(loaded)
        img_size, mean, std, cam_method = loaded.img_size, loaded.mean, loaded.std, loaded.cam_method
    else:  # score maps: the images are only drawn (--vis), normalised and back
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        img_size = args.img_size or 224
    runner = _Run(args, model, device, img_size, mean, std, cam_method)

    calibration = None
    if args.threshold_from:
        calibration = runner.evaluate(args.threshold_from, outputs=False)
    raw, n_images = runner.evaluate(args.split, outputs=True)
    metrics = summarise(raw)

    result: dict[str, Any] = {
        'model': args.model or (model.pretrained_cfg.get('architecture') if model is not None else None),
        'checkpoint': args.checkpoint,
        'scoremaps': args.scoremaps,
        'dataset': args.dataset,
        'data_dir': args.data_dir,
        'split': args.split,
        'num_images': n_images,
        'img_size': img_size,
        'normalization': normalization,
        'align': args.align,
        'cam_method': raw.cam_method,
        'cam_threshold': args.cam_threshold,
        'cam_curve_interval': args.cam_curve_interval,
        'iou_thresholds': list(args.iou_thresholds),
        'threshold_source': f'oracle: best threshold on {args.split} itself',
        'metrics': metrics,
    }
    if calibration is not None:
        from ..metrics import calibrated_accuracy

        cal = calibrated_accuracy(calibration[0], raw)
        result['calibrated'] = {
            'threshold_from': args.threshold_from,
            'num_images': calibration[1],
            'metrics': {'max_box_acc': cal['max_box_acc'], 'max_box_acc_v2': cal['max_box_acc_v2']},
            'best_threshold': cal['best_threshold'],
            'best_thresholds_v2': {str(k): v for k, v in cal['best_thresholds_v2'].items()},
        }
    if raw.cam_thresholds is not None:
        result['curves'] = {'cam_thresholds': raw.cam_thresholds, **raw.curves()}

    rows = [('split', f'{args.split} ({n_images} images)'), ('threshold', result['threshold_source'])]
    rows.append(('cam method', raw.cam_method or f'score maps from {args.scoremaps}'))
    rows += [(k, _fmt(v)) for k, v in metrics.items()]
    if calibration is not None:
        cal = result['calibrated']
        rows.append(('calibrated on', f'{args.threshold_from} ({calibration[1]} images)'))
        rows += [(f'{k} (threshold from {args.threshold_from})', _fmt(v)) for k, v in cal['metrics'].items()]
        rows.append((f'best_threshold ({args.threshold_from})', _fmt(cal['best_threshold'])))
    print(_format_table(rows))
    if args.json:
        write_json(args.json, _scalar(result))
    if args.save_cams:
        print(f'wrote {n_images} score maps under {args.save_cams}')
    if args.vis:
        print(f'wrote {min(args.vis, n_images)} pictures under {args.vis_dir}')
    return 0
