"""One picture for docs/paper_tables.md: several cells of a finished synthetic study side by side.

The study's own ``figures/<cell>.png`` show one cell each (8 images, image | heatmap | overlay); this puts
the first test images of several cells' seed-0 models in one grid (overlay with boxes per model), each
model's box at its own best MaxBoxAcc threshold on the study's split, with the legend and the thresholds::

    python benchmarks/paper_figure.py runs/study/synthetic-paper docs/paper_tables_figure.png \\
        --cells table3/cam table3/has32 table3/cutmix table3/adl table3/adl_ft
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from timm_adl.commands.demo import evaluate_split
from timm_adl.data.synthetic import render_synthetic, synthetic_variant
from timm_adl.metrics import extract_boxes
from timm_adl.viz import cam_grid, save_png


def seed0_weights(study: Path, cell: str) -> tuple[Path, str]:
    """The first seed's evaluated weights of ``cell`` and the study's split, from its report.json."""
    report = json.loads((study / 'report.json').read_text(encoding='utf-8'))
    cells = {c['name']: c for c in report['cells']}
    if cell not in cells:
        raise SystemExit(f'cell {cell!r} is not in {study / "report.json"}; cells: {", ".join(cells)}')
    run = cells[cell]['runs'][0]
    return study / run['weights'], run['split']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('study', type=Path, help='a finished synthetic study folder')
    parser.add_argument('out', type=Path, help='output PNG')
    parser.add_argument('--cells', nargs='+', default=['table3/cam', 'table3/has32', 'table3/adl'])
    parser.add_argument('--variant', default='default', help='the synthetic variant the cells were scored on')
    parser.add_argument('--images', type=int, default=4)
    parser.add_argument('--min-size', type=int, default=192)
    args = parser.parse_args()

    synth_cfg = synthetic_variant(args.variant)
    cams, preds, notes, split = [], [], [], 'test'
    for cell in args.cells:
        weights, split = seed0_weights(args.study, cell)
        data_root = Path(yaml.safe_load((weights.parent / 'config.yaml').read_text())['data']['root'])
        ev = evaluate_split(weights, data_root, synth_cfg, split)
        thr = ev['diagnostics']['best_threshold']
        cam = ev['cams'][: args.images].float()
        cams.append(cam)
        preds.append([np.asarray(extract_boxes(c.numpy(), [thr]))[0].reshape(-1, 4) for c in cam])
        notes.append(f'{cell} {thr:.2f}')
        gt = ev['boxes'][: args.images]
        print(
            f'{cell}: MaxBoxAccV2 {ev["metrics"]["max_box_acc_v2"]:.1f} (seed 0, {split}), threshold {thr:.2f}'
        )
    images = render_synthetic(synth_cfg, split, n=args.images, seed=0)['images']
    grid = cam_grid(
        list(images),
        cams,
        gt,
        preds,
        titles=args.cells,
        show_heatmap=False,
        min_size=args.min_size,
        with_legend=True,
        notes=[f"seed 0, {split}; green boxes at each model's best MaxBoxAcc threshold: {'; '.join(notes)}"],
    )
    print(f'wrote {save_png(grid, args.out)}')


if __name__ == '__main__':
    main()
