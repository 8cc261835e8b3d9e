"""The ADL paper's trends, checked on a finished ``synthetic/paper`` (or ``cub/paper``) study.

Reads a study's ``report.json`` and prints, for each trend of the paper's Tables 1-3, the paired
difference per seed (same seed = same initial weights, data order and image set), its mean ± sd, and the
verdict of a rule fixed before any result was seen (docs/paper_tables.md):

* **reproduced**: the difference has the paper's sign on every seed;
* **reversed**: it has the opposite sign on every seed;
* **mixed**: anything else (within the seed-to-seed spread).

Each trend is checked on both protocols: Top-1 Loc at the recipe's fixed threshold (the paper's metric) and
MaxBoxAccV2 (Choe et al. 2020), plus Top-1 Clas where the paper's claim is about classification::

    python benchmarks/paper_trends.py runs/study/synthetic-paper/report.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

LOC_METRICS = ('top1_loc', 'max_box_acc_v2')
NAMES = {'top1_clas': 'Top-1 Clas', 'top1_loc': 'Top-1 Loc', 'max_box_acc_v2': 'MaxBoxAccV2'}


@dataclass(frozen=True)
class Trend:
    """``better`` should beat ``worse`` on ``metrics`` (cells named as in the study's report)."""

    claim: str
    better: str
    worse: str
    metrics: tuple[str, ...] = LOC_METRICS


TRENDS = (
    Trend('T1: drop rate 75 % localizes better than 100 % (drop mask every step)', 'table1/adl_dr75', 'table1/adl_dr100'),
    Trend('T1: drop rate 75 % localizes better than 50 %', 'table1/adl_dr75', 'table1/adl_dr50'),
    Trend('T1: drop rate 75 % localizes better than 25 %', 'table1/adl_dr75', 'table1/adl_dr25'),
    Trend('T1: drop rate 75 % localizes better than 0 % (importance map every step)', 'table1/adl_dr75', 'table1/adl_dr0'),
    Trend('T1: both maps localize better than the drop mask only', 'table1/adl_dr75', 'table1/adl_drop_only'),
    Trend('T1: both maps localize better than the importance map only', 'table1/adl_dr75', 'table1/adl_importance_only'),
    Trend('T1: the importance map keeps classification (both > drop mask only)', 'table1/adl_dr75', 'table1/adl_drop_only', ('top1_clas',)),
    Trend('T2: adding the next-earlier point helps (layer1+2 > layer2)', 'table2/adl_layer1-2', 'table2/adl_layer2'),
    Trend('T2: the lowest points do not help (layer1+2 > all four points)', 'table2/adl_layer1-2', 'table2/adl_act1-layer2'),
    Trend('T3: ADL localizes better than CAM', 'table3/adl', 'table3/cam'),
    Trend('T3: ADL localizes better than HaS-32', 'table3/adl', 'table3/has32'),
    Trend('T3: HaS-32 localizes better than CAM', 'table3/has32', 'table3/cam'),
    Trend('T3: ADL costs little classification (ADL >= CAM - 2.3, the paper\'s largest cost)', 'table3/adl', 'table3/cam', ('top1_clas',)),
    Trend('T3 fine-tuned: ADL localizes better than CAM', 'table3/adl_ft', 'table3/cam_ft'),
)  # fmt: skip


def per_seed(report: dict) -> dict[str, dict[int, dict[str, float]]]:
    """``{cell: {seed: metrics}}`` of the finished runs."""
    return {c['name']: {r['seed']: r['metrics'] for r in c['runs']} for c in report['cells']}


def verdict(diffs: list[float], margin: float = 0.0) -> str:
    if diffs and all(d > margin for d in diffs):
        return 'reproduced'
    if diffs and all(d < margin for d in diffs):
        return 'reversed'
    return 'mixed'


def check(trend: Trend, runs: dict, metric: str) -> str:
    better, worse = runs.get(trend.better, {}), runs.get(trend.worse, {})
    seeds = sorted(set(better) & set(worse))
    if not seeds:
        return f'| {trend.claim} | {NAMES[metric]} | not run | | |'
    diffs = [better[s][metric] - worse[s][metric] for s in seeds]
    # the classification-cost trend allows the paper's largest reported cost, 2.3 points
    margin = -2.3 if 'costs little' in trend.claim else 0.0
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    shown = ', '.join(f'{d:+.1f}' for d in diffs)
    mean = f'{statistics.mean(diffs):+.1f} ± {sd:.1f}'
    return f'| {trend.claim} | {NAMES[metric]} | {shown} | {mean} | {verdict(diffs, margin)} |'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('report', type=Path, help="a study's report.json")
    args = parser.parse_args()
    runs = per_seed(json.loads(args.report.read_text(encoding='utf-8')))
    print('| trend (paper) | metric | difference per seed | mean ± sd | verdict |')
    print('|---|---|---|---|---|')
    for trend in TRENDS:
        for metric in trend.metrics:
            print(check(trend, runs, metric))


if __name__ == '__main__':
    main()
