"""``timm-adl push --checkpoint PATH --repo-id ORG/NAME [--dry-run FOLDER]``: publish a trained checkpoint.

PATH is a training run folder (``config.yaml`` + ``best.safetensors``) or a ``.safetensors`` file with
``--model NAME`` (or ``--recipe``, or a ``config.yaml`` beside it). The model is rebuilt as the run built it,
the weights are loaded strictly, and the folder ``timm_adl.hub.save_pretrained`` writes is uploaded in one
commit; ``--dry-run FOLDER`` writes that folder and uploads nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli import CliError
from ..train.run_layout import WEIGHTS_CHOICES, RunLayout
from ._flags import add_json, add_model, write_json

HELP_EPILOG = """examples:
  timm-adl push --checkpoint runs/cub_r50 --repo-id timm-adl/resnet50_se_adl.cub --dry-run runs/push/r50_card
  timm-adl push --checkpoint runs/cub_r50 --repo-id timm-adl/resnet50_se_adl.cub \\
      --metrics runs/cub_r50_test/results.json --split test --heatmaps runs/cub_r50_test/cams.png
  timm-adl push --checkpoint model.safetensors --model resnet50_se_adl --repo-id me/r50-adl --dataset cub \\
      --split test --metrics results.json

Metrics default to the run's best validation metrics (summary.json, split = the recipe's data.val_split);
--metrics takes a JSON of WSOL metrics in percent (top1_clas, gt_known_loc, top1_loc, max_box_acc,
max_box_acc_v2), e.g. the results of `timm-adl eval`. Authentication: `hf auth login` or HF_TOKEN.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'push',
        help='publish a trained checkpoint on the Hugging Face Hub with its model card (or --dry-run)',
        description='Rebuild the model of a training run (or of a .safetensors file), write the Hub folder '
        '(model.safetensors, config.json, recipe.yaml, README.md model card, metrics.json, heatmaps.png) and '
        'upload it in one commit.',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        '--checkpoint',
        metavar='PATH',
        help='what to publish: a training run folder, or a .safetensors weights file',
    )
    p.add_argument('old_checkpoint', nargs='?', help=argparse.SUPPRESS)  # the positional spelling, deprecated
    p.add_argument(
        '--repo-id', required=True, metavar='ORG/NAME', help='Hub repo, e.g. timm-adl/resnet50_se_adl.cub'
    )
    p.add_argument('--dry-run', metavar='FOLDER', help='write the folder here for review; upload nothing')
    p.add_argument('--overwrite', action='store_true', help='with --dry-run: replace a non-empty FOLDER')
    add_model(
        p, help='timm model name (required for a bare .safetensors without a recipe or config.yaml beside it)'
    )
    p.add_argument('--recipe', metavar='PATH', help='recipe / config YAML the weights were trained with')
    p.add_argument(
        '--weights',
        default='best',
        choices=WEIGHTS_CHOICES,
        help='which weights of a run folder (default: best)',
    )
    p.add_argument(
        '--num-classes', type=int, metavar='N', help='classes of the head (default: read from the weights)'
    )
    p.add_argument(
        '--metrics',
        metavar='PATH',
        help="JSON file of WSOL metrics (default: the run's best validation metrics)",
    )
    p.add_argument(
        '--dataset', help="data set the metrics were measured on (default: the recipe's data.name)"
    )
    p.add_argument('--split', help='split the metrics were measured on (e.g. test)')
    p.add_argument('--heatmaps', help='PNG of CAM heatmaps shown on the model card')
    p.add_argument('--label-names', help='class names: a text file (one per line) or a JSON list')
    p.add_argument('--license', help="license id for the card (default: the model's, else apache-2.0)")
    p.add_argument('--private', action='store_true', help='create the repo as private')
    p.add_argument('--revision', help='branch to commit to (created if missing; default main)')
    p.add_argument('--commit-message', help='commit message')
    add_json(p, help="write what was published (folder or commit URL) as JSON to PATH ('-' prints it)")
    p.set_defaults(func=run)


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise CliError(f'{what} file not found: {path}') from None
    except json.JSONDecodeError as err:
        raise CliError(f'{what} file {path} is not valid JSON ({err.msg}, line {err.lineno})') from None
    except UnicodeDecodeError:
        raise CliError(f'{what} file {path} is not valid JSON (not UTF-8 text)') from None


def _label_names(path: str | None) -> list[str] | None:
    if path is None:
        return None
    if path.endswith('.json'):
        data = _read_json(path, 'label names')
        if isinstance(data, dict):
            data = [data[k] for k in sorted(data, key=int)]
        if not isinstance(data, list):
            raise CliError(f'label names file {path} must hold a JSON list (or index -> name mapping)')
        return [str(n) for n in data]
    try:
        lines = Path(path).read_text(encoding='utf-8').splitlines()
    except FileNotFoundError:
        raise CliError(f'label names file not found: {path}') from None
    return [line.strip() for line in lines if line.strip()]


def _checkpoint(args: argparse.Namespace) -> str:
    from ._flags import warn_deprecated

    if args.old_checkpoint is not None:
        if args.checkpoint is not None:
            raise CliError(
                'give the checkpoint once: --checkpoint PATH (the positional spelling is deprecated)'
            )
        warn_deprecated('timm-adl push CHECKPOINT (positional)', f'--checkpoint {args.old_checkpoint}')
        return args.old_checkpoint
    if args.checkpoint is None:
        raise CliError('--checkpoint PATH is required: a training run folder or a .safetensors file')
    return args.checkpoint


def build_from_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, Path | None, Path]:
    """The model as the run built it, with its weights (``timm_adl.hub.load_model``):
    ``(model, train_config_or_None, run_dir, weights_path)``."""
    import sys

    from ..hub import load_model
    from ..train.run_layout import find_run_folder

    loaded = load_model(
        _checkpoint(args),
        model=args.model,
        num_classes=args.num_classes,
        weights=args.weights,
        recipe=args.recipe,
    )
    for note in loaded.notes:
        print(f'timm-adl: {note}', file=sys.stderr)
    weights_path = Path(loaded.weights_file)
    layout = find_run_folder(weights_path) if loaded.run_config is not None else None
    return loaded.model, loaded.run_config, (layout.root if layout else None), weights_path


def _metrics(args: argparse.Namespace, cfg: Any, run_dir: Path | None) -> tuple[dict, str | None]:
    """``(metrics, default_split)`` from --metrics or the run's summary.json."""
    if args.metrics:
        data = _read_json(args.metrics, 'metrics')
        if isinstance(data, dict) and isinstance(data.get('metrics'), dict):
            data = {
                **data['metrics'],
                **{k: data[k] for k in ('dataset', 'split', 'cam_method') if k in data},
            }
        if not isinstance(data, dict):
            raise CliError(f'metrics file {args.metrics} must hold a JSON object of metric -> value')
        return data, None
    summary = RunLayout(run_dir).summary if run_dir is not None else None
    if summary is not None and summary.is_file():
        data = _read_json(str(summary), 'summary')
        best = dict(data.get('best') or {})
        if (
            best
        ):  # the trainer's validation made its maps with the recipe's method (plain CAM before it had one)
            best['cam_method'] = data.get('cam_method') or (cfg.cam_method if cfg is not None else 'cam')
        return best, (cfg.data.val_split if cfg is not None else None)
    return {}, None


def _auto_figure(model: Any, cfg: Any, split: str | None, metrics: dict, folder: str) -> str | None:
    """Figure 3 drawn from the evaluated split of the run's data, for a card without --heatmaps; None (with
    a note) when the run records no data or the split cannot be read here."""
    from ..hub.figure import draw_run_figure

    if cfg is None or not split or not cfg.data.root:
        return None
    threshold = metrics.get('best_threshold')
    try:
        path = draw_run_figure(
            model,
            cfg,
            split,
            Path(folder) / 'heatmaps.png',
            threshold if isinstance(threshold, float) else None,
        )
    except (OSError, ValueError) as err:
        print(
            f'timm-adl push: note: no CAM picture on the card ({str(err).splitlines()[0]}); give --heatmaps PNG'
        )
        return None
    return str(path)


def run(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix='timm-adl-card-') as tmp:
        return _run(args, tmp)


def _run(args: argparse.Namespace, tmp: str) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from ..hub import push_to_hub, save_pretrained
    from ..train import config_to_dict
    from ..train.checkpoint import read_data_config

    if args.overwrite and not args.dry_run:
        raise CliError('--overwrite only applies to --dry-run FOLDER')
    try:
        model, cfg, run_dir, weights_path = build_from_checkpoint(args)
        metrics, default_split = _metrics(args, cfg, run_dir)
        kwargs = dict(
            dataset=args.dataset,
            split=args.split or metrics.get('split') or (default_split if metrics else None),
            label_names=_label_names(args.label_names),
            heatmaps=args.heatmaps,
            license=args.license,
        )
        if args.heatmaps is None:  # the card draws its own picture from the split its metrics come from
            kwargs['heatmaps'] = _auto_figure(model, cfg, kwargs['split'], metrics, tmp)
        # The input the run trained on, recorded in its weights: config.json's pretrained_cfg gets it, so
        # hub-loaded models normalise as in training even without a recipe.
        recorded = read_data_config(weights_path)
        if recorded is not None:
            kwargs['data_config'] = {k: recorded[k] for k in ('input_size', 'mean', 'std') if k in recorded}
        recipe = config_to_dict(cfg) if cfg is not None else None
        if args.dry_run:
            folder = save_pretrained(
                model, args.dry_run, metrics, recipe, repo_id=args.repo_id, overwrite=args.overwrite, **kwargs
            )
            print(
                f'wrote {folder} (dry run, nothing uploaded): {", ".join(sorted(p.name for p in folder.iterdir()))}'
            )
            if args.json:
                write_json(
                    args.json, {'checkpoint': str(weights_path), 'folder': str(folder), 'commit_url': None}
                )
            return 0
        info = push_to_hub(
            model,
            args.repo_id,
            metrics,
            recipe,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            **kwargs,
        )
    except HfHubHTTPError as err:  # names the repo; every other error is cli.main's one line
        raise CliError(f'upload to {args.repo_id} failed: {str(err).splitlines()[0]}') from None
    print(f'pushed {weights_path} to {info.commit_url}')
    if args.json:
        write_json(
            args.json, {'checkpoint': str(weights_path), 'folder': None, 'commit_url': str(info.commit_url)}
        )
    return 0
