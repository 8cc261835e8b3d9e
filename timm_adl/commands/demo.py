"""timm-adl demo: train a CAM baseline and its ADL twin on the built-in synthetic set and compare them.

The project's main job in one command: it generates (or reuses) the synthetic CUB-like set
(:mod:`timm_adl.data.synthetic`), trains both recipes of ``recipes/synthetic/`` with the project's trainer
for each seed at the same budget, evaluates both on ``test`` with the WSOL metrics (the paper's fixed
threshold and the fair protocol's MaxBoxAcc), prints a table, and writes:

* ``DIR/results.json``: one row per seed and method, ``{"seed", "method": "cam"|"adl", "top1_clas",
  "gt_known_loc", "top1_loc", "max_box_acc", "max_box_acc_v2", "train_seconds"}``, metrics in percent;
* ``DIR/compare.png``: test images with both models' CAMs and boxes (the paper's Figure 3);
* ``DIR/diagnostics.json``: why the numbers are what they are (per run: the CAM method of the maps
  (``cam_method``, the recipes' key), Top-1 with the head erased, where
  the CAM peak lies, and for ADL the Top-1 with the drop mask forced on at every ADL layer).

Every choice (data design, recipes) was made on ``val``/``train-fullsup``; ``test`` is only evaluated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from ._flags import add_data_dir, add_device, add_json, default_output, write_json

__all__ = ['RESULT_KEYS', 'register', 'run', 'run_demo']

METHODS = ('cam', 'adl')
RESULT_KEYS = (
    'seed',
    'method',
    'top1_clas',
    'gt_known_loc',
    'top1_loc',
    'max_box_acc',
    'max_box_acc_v2',
    'train_seconds',
)
METRIC_KEYS = RESULT_KEYS[2:7]
COLUMNS = ('Top-1 Clas', 'GT-known Loc', 'Top-1 Loc', 'MaxBoxAcc', 'MaxBoxAccV2')
FIGURE_IMAGES = 8
FIGURE_MIN_SIZE = 288  # the 96 px images drawn 3x: boxes and text readable
DATA_SEED = 0  # the images are fixed; a demo seed changes initialisation, data order and ADL draws
# A few hundred images and one short epoch: exercises every step of the demo in seconds (tests, CI).
TINY_SIZES = {'train': 128, 'train-fullsup': 24, 'val': 24, 'test': 48}
TINY_OVERRIDES = ('epochs=1', 'batch_size=32')
DEFAULT_OUT = default_output('demo')


def recipe_dir() -> Path:
    """``synthetic/`` of the packaged recipes (installed wheel or source checkout)."""
    from ..train.recipes import recipes_dir

    return recipes_dir() / 'synthetic'


def _recipe(method: str) -> Path:
    path = recipe_dir() / f'{method}.yaml'
    if not path.is_file():
        from ..cli import CliError

        raise CliError(f'demo recipe not found: {path} (the package is incomplete: reinstall timm-adl)')
    return path


def evaluate_split(
    weights: str | os.PathLike, data_root: Path, synth_cfg: Any, split: str = 'test', batch_size: int = 100
) -> dict[str, Any]:
    """Metrics (both protocols) and diagnostics of one trained run on ``split``; also its first CAMs for the figure.

    The run's model comes from the one loader (``timm_adl.hub.load_model``): built from the run's
    ``config.yaml`` with ADL where the recipe put it, normalised exactly as the run trained (recorded in its
    weights). ADL is the identity in eval mode, so the same model also serves the "drop forced on" diagnostic.
    """
    import numpy as np
    import torch

    from ..data import create_wsol_dataset, create_wsol_loader
    from ..data.synthetic import render_synthetic
    from ..evaluation import EvalBatch, evaluate
    from ..hub import load_model

    loaded = load_model(weights)
    cfg, model = loaded.run_config, loaded.model
    mean, std = loaded.mean, loaded.std
    ds = create_wsol_dataset(
        'wsol-metadata',
        data_root,
        split,
        is_training=False,
        img_size=loaded.img_size,
        mean=mean,
        std=std,
        metadata_root=data_root / 'metadata',
    )
    # the same images re-rendered without the head (same random stream, so only head pixels differ)
    truth = render_synthetic(synth_cfg, split, seed=DATA_SEED, draw_head=False)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    counts = {'nohead': 0, 'peak_head': 0, 'drop': 0}
    keep: dict[str, Any] = {'cams': [], 'boxes': []}
    adl_eval = model if loaded.adl_points else None

    def diagnostics(b: EvalBatch) -> None:
        sl = slice(b.start, b.start + len(b.images))
        nohead = torch.from_numpy(truth['images'][sl]).permute(0, 3, 1, 2).float() / 255.0
        nohead = (nohead - mean_t) / std_t
        with torch.no_grad():
            counts['nohead'] += int((model(nohead).argmax(1) == b.labels).sum())
        flat = b.cams.flatten(1).argmax(1).numpy()
        py, px = np.divmod(flat, b.cams.shape[-1])
        hb = truth['head_boxes'][sl]
        counts['peak_head'] += int(
            ((px >= hb[:, 0]) & (px <= hb[:, 2]) & (py >= hb[:, 1]) & (py <= hb[:, 3])).sum()
        )
        if adl_eval is not None:
            counts['drop'] += int((_forward_drop_always(adl_eval, b.images).argmax(1) == b.labels).sum())
        if b.start == 0:
            keep['cams'], keep['boxes'] = b.cams[:FIGURE_IMAGES].clone(), list(b.boxes[:FIGURE_IMAGES])

    loader = create_wsol_loader(ds, batch_size, is_training=False)
    result = evaluate(
        model, loader, cam_method=loaded.cam_method, cam_threshold=cfg.cam_threshold, on_batch=diagnostics
    )
    metrics = result.metrics()
    n = len(ds)
    diag = {
        'top1_no_head': 100.0 * counts['nohead'] / n,
        'cam_peak_in_head': 100.0 * counts['peak_head'] / n,
        'best_threshold': float(result.best_threshold if result.best_threshold is not None else float('nan')),
    }
    if adl_eval is not None:
        diag['top1_drop_always'] = 100.0 * counts['drop'] / n
    return {
        'metrics': {k: float(metrics[k]) for k in METRIC_KEYS},
        'cam_method': result.cam_method,
        'diagnostics': diag,
        'cams': keep['cams'],
        'boxes': keep['boxes'],
    }


def _forward_drop_always(model, images):
    """Eval-mode forward with every ADL layer multiplying by its drop mask (the "drop forced on" diagnostic)."""
    import torch

    from ..adl import ADL, adl_maps

    def drop(module, inputs, output):
        mask, _ = adl_maps(inputs[0], module.gamma)
        return inputs[0] * mask

    handles = [m.register_forward_hook(drop) for m in model.modules() if isinstance(m, ADL)]
    try:
        with torch.no_grad():
            return model(images)
    finally:
        for h in handles:
            h.remove()


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def format_table(rows: Sequence[dict[str, Any]], split: str = 'test', cam_method: str | None = None) -> str:
    """Mean ± sd over seeds per method, plus ADL − CAM (``cam_method``: how the maps were made)."""
    seeds = sorted({r['seed'] for r in rows})
    head = f'{"method":<8}' + ''.join(f'{c:>16}' for c in COLUMNS) + f'{"train s":>10}'
    maps = f', maps by {cam_method!r}' if cam_method else ''
    lines = [f'{split} split, {len(seeds)} seed(s) {seeds}{maps}: mean ± sd, percent', head, '-' * len(head)]
    by_method = {m: [r for r in rows if r['method'] == m] for m in METHODS}
    for method, rs in by_method.items():
        if not rs:
            continue
        cells = []
        for k in METRIC_KEYS:
            m, sd = _mean_sd([r[k] for r in rs])
            cells.append(f'{m:6.1f} ± {sd:4.1f}' if len(rs) > 1 else f'{m:6.1f}')
        t, _ = _mean_sd([r['train_seconds'] for r in rs])
        lines.append(f'{method.upper():<8}' + ''.join(f'{c:>16}' for c in cells) + f'{t:>10.0f}')
    if all(by_method.values()):
        diffs = []
        for k in METRIC_KEYS:
            per_seed = [
                next(r[k] for r in by_method['adl'] if r['seed'] == s)
                - next(r[k] for r in by_method['cam'] if r['seed'] == s)
                for s in seeds
            ]
            m, sd = _mean_sd(per_seed)
            diffs.append(f'{m:+6.1f} ± {sd:4.1f}' if len(per_seed) > 1 else f'{m:+6.1f}')
        lines.append(f'{"ADL-CAM":<8}' + ''.join(f'{c:>16}' for c in diffs))
    return '\n'.join(lines)


def run_demo(
    seeds: Sequence[int] = (0,),
    out: str | os.PathLike = DEFAULT_OUT,
    data_dir: str | os.PathLike | None = None,
    tiny: bool = False,
    device: str = 'auto',
    split: str = 'test',
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the whole demo; return the ``results.json`` rows."""
    from ..data.synthetic import SyntheticConfig, make_synthetic_wsol
    from ..train import load_config, run_training

    out = Path(out)
    t_start = time.perf_counter()
    synth_cfg = SyntheticConfig(sizes=TINY_SIZES) if tiny else SyntheticConfig()
    data_root = Path(data_dir) if data_dir else out / ('data-tiny' if tiny else 'data')
    print(f'synthetic data: {data_root}', flush=True)
    make_synthetic_wsol(data_root, seed=DATA_SEED, config=synth_cfg)
    print(f'  ready after {time.perf_counter() - t_start:.0f} s', flush=True)

    rows, diagnostics, figure = [], [], {}
    for seed in seeds:
        for method in METHODS:
            overrides = [
                f'seed={seed}',
                f'data.root={data_root}',
                f'data.metadata_root={data_root / "metadata"}',
                f'output_dir={out / "runs" / f"{method}-seed{seed}"}',
                f'device={device}',
            ]
            if tiny:
                overrides += list(TINY_OVERRIDES)
            cfg = load_config(_recipe(method), overrides)
            print(f'== seed {seed}: {method.upper()} ({cfg.model}) ==', flush=True)
            # resume=True: a finished run is reused, an interrupted one continues bit-exactly
            result = run_training(cfg, resume=True, progress=progress)
            ev = evaluate_split(result['checkpoints']['last'], data_root, synth_cfg, split)
            row = {
                'seed': int(seed),
                'method': method,
                **ev['metrics'],
                'train_seconds': float(result['train_seconds']),
            }
            rows.append(row)
            diagnostics.append(
                {'seed': int(seed), 'method': method, 'cam_method': ev['cam_method'], **ev['diagnostics']}
            )
            if seed == seeds[0]:
                figure[method] = ev
            print(
                f'  {split}: '
                + '  '.join(f'{c} {row[k]:.1f}' for c, k in zip(COLUMNS, METRIC_KEYS, strict=True)),
                flush=True,
            )

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / 'results.json', (json.dumps(rows, indent=1) + '\n').encode(), durable=False)
    atomic_write_bytes(
        out / 'diagnostics.json', (json.dumps(diagnostics, indent=1) + '\n').encode(), durable=False
    )
    _write_figure(out / 'compare.png', synth_cfg, figure, split)
    print(format_table(rows, split, cam_method=', '.join(sorted({d['cam_method'] for d in diagnostics}))))
    print(
        f'wrote {out / "results.json"}, {out / "compare.png"} ({time.perf_counter() - t_start:.0f} s in all)'
    )
    return rows


def _write_figure(
    path: Path, synth_cfg: Any, figure: dict[str, dict], split: str, min_size: int = FIGURE_MIN_SIZE
) -> None:
    """Figure 3 of the paper for the first test images: each model's heatmap, and its box (green) at its own
    best (MaxBoxAcc) threshold against the ground truth (red); a legend and the thresholds at the bottom."""
    import numpy as np

    from ..data.synthetic import render_synthetic
    from ..metrics import extract_boxes
    from ..viz import cam_grid, save_png

    n = len(figure['cam']['cams'])
    images = render_synthetic(synth_cfg, split, n=n, seed=DATA_SEED)['images']
    cams, preds, thresholds = [], [], []
    for method in METHODS:
        cam = figure[method]['cams'].float()
        thr = figure[method]['diagnostics']['best_threshold']
        preds.append([np.asarray(extract_boxes(c.numpy(), [thr]))[0].reshape(-1, 4) for c in cam])
        cams.append(cam)
        thresholds.append(f'{method.upper()} {thr:.2f}')
    maps = ', '.join(sorted({figure[m]['cam_method'] for m in METHODS}))
    note = (
        f"green boxes at each model's best MaxBoxAcc threshold on {split} (fraction of the map's max): "
        f'{"; ".join(thresholds)}. CAM method: {maps}'
    )
    grid = cam_grid(
        list(images),
        cams,
        figure['cam']['boxes'],
        preds,
        titles=[m.upper() for m in METHODS],
        min_size=min_size,
        with_legend=True,
        notes=[note],
    )
    save_png(grid, path)


HELP_EPILOG = """examples:
  timm-adl demo                       # full demo on CPU or GPU: runs/demo/results.json, runs/demo/compare.png
  timm-adl demo --tiny --out /tmp/demo    # a smoke run in about a minute
  timm-adl demo --seeds 0 1 2 --device cuda --json runs/demo/rows.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'demo',
        help='train CAM and ADL on the built-in synthetic set and compare them',
        description=__doc__.split('\n\n')[0],
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        '--seeds', type=int, nargs='+', default=[0], metavar='SEED', help='training seeds (default: 0)'
    )
    p.add_argument(
        '--out', default=DEFAULT_OUT, metavar='DIR', help=f'output folder (default: {DEFAULT_OUT})'
    )
    add_data_dir(
        p,
        help='data set root of the synthetic set (images and metadata/); made there if absent, reused if '
        'present (default: OUT/data)',
    )
    p.add_argument('--tiny', action='store_true', help='a few hundred images and one epoch: a smoke run')
    p.add_argument(
        '--split',
        default='test',
        choices=('test', 'val', 'train-fullsup'),
        help='split to evaluate (default: test; choose settings on val or train-fullsup, never on test)',
    )
    add_device(p)
    add_json(p, help="also write the results rows as JSON to PATH ('-' prints them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError

    if len(set(args.seeds)) != len(args.seeds):
        raise CliError(f'--seeds has repeats: {args.seeds}')
    rows = run_demo(
        seeds=args.seeds,
        out=args.out,
        data_dir=args.data_dir,
        tiny=args.tiny,
        device=args.device,
        split=args.split,
    )
    if args.json:
        write_json(args.json, rows)
    return 0
