"""The study's results as typed objects, and its report: ``report.md`` (one table per study) and ``report.json``.

Each (cell, seed) run leaves a ``result.json`` (:class:`RunResult`); the report is rebuilt from those files
alone, so it can be rewritten at any time (``timm-adl study --report-only``) and always matches them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes

__all__ = [
    'METRICS',
    'CellResult',
    'MetricStat',
    'RunResult',
    'StudyResult',
    'format_markdown',
    'mean_sd',
    'write_report',
]

# (key, column title) of the metrics the tables show, in the paper's order; percent.
METRICS = (
    ('top1_clas', 'Top-1 Clas'),
    ('gt_known_loc', 'GT-known Loc'),
    ('top1_loc', 'Top-1 Loc'),
    ('max_box_acc', 'MaxBoxAcc'),
    ('max_box_acc_v2', 'MaxBoxAccV2'),
)
RESULT_VERSION = 1


@dataclass(frozen=True)
class RunResult:
    """One trained run (a cell at one seed) evaluated on the study's split: what ``result.json`` holds."""

    cell: str
    seed: int
    split: str
    metrics: dict[str, float]  # METRICS keys, percent
    cam_threshold: float  # the fixed threshold of GT-known Loc and Top-1 Loc (the recipe's)
    best_threshold: float | None  # the CAM threshold where MaxBoxAcc (IoU 50) peaks
    cam_method: str
    num_images: int
    train_seconds: float
    eval_seconds: float
    best_epoch: int
    epochs: int
    weights: str  # the evaluated weights (the recipe's selected checkpoint), relative to the study folder
    figure: str | None = None  # this run's Figure-3 picture, relative to the study folder
    version: int = RESULT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def read(cls, path: Path) -> RunResult:
        return cls.from_dict(json.loads(path.read_text(encoding='utf-8')))

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=1) + '\n').encode())


@dataclass(frozen=True)
class MetricStat:
    """Mean and sample standard deviation (n - 1; 0 for one value) over the seeds that have the value."""

    mean: float | None
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> MetricStat:
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not vals:
            return cls(None, None, 0)
        m, sd = mean_sd(vals)
        return cls(m, sd, len(vals))

    def format(self, digits: int = 1) -> str:
        if self.mean is None:
            return '–'
        if self.n == 1:
            return f'{self.mean:.{digits}f}'
        return f'{self.mean:.{digits}f} ± {self.sd:.{digits}f}'


@dataclass(frozen=True)
class CellResult:
    name: str
    group: str
    recipe: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]  # the seeds the study asks for
    runs: tuple[RunResult, ...]  # the finished ones, by seed
    stats: dict[str, MetricStat]  # METRICS keys plus 'best_threshold' and 'train_seconds'
    cam_threshold: float | None
    figure: str | None  # relative to the study folder
    same_as: tuple[str, ...] = ()  # cells whose runs this one reuses (the same config at the same seed)

    @property
    def done(self) -> bool:
        return len(self.runs) == len(self.seeds)

    @classmethod
    def of(
        cls, cell, runs: Sequence[RunResult], figure: str | None, same_as: Sequence[str] = ()
    ) -> CellResult:
        stats = {k: MetricStat.of([r.metrics.get(k) for r in runs]) for k, _ in METRICS}
        stats['best_threshold'] = MetricStat.of([r.best_threshold for r in runs])
        stats['train_seconds'] = MetricStat.of([r.train_seconds for r in runs])
        thresholds = sorted({r.cam_threshold for r in runs})
        return cls(
            name=cell.name,
            group=cell.group,
            recipe=cell.recipe,
            overrides=tuple(cell.overrides),
            seeds=tuple(cell.seeds),
            runs=tuple(sorted(runs, key=lambda r: r.seed)),
            stats=stats,
            cam_threshold=thresholds[0] if len(thresholds) == 1 else None,
            figure=figure,
            same_as=tuple(same_as),
        )

    def to_dict(self) -> dict[str, Any]:
        return _finite(
            {
                'name': self.name,
                'group': self.group,
                'recipe': self.recipe,
                'overrides': list(self.overrides),
                'seeds': list(self.seeds),
                'done': self.done,
                'cam_threshold': self.cam_threshold,
                'stats': {k: asdict(v) for k, v in self.stats.items()},
                'figure': self.figure,
                'same_as': list(self.same_as),
                'runs': [r.to_dict() for r in self.runs],
            }
        )


@dataclass(frozen=True)
class StudyResult:
    name: str
    description: str
    groups: tuple[str, ...]
    cells: tuple[CellResult, ...]
    split: str
    source: str = ''  # the study file

    @property
    def done(self) -> bool:
        return all(c.done for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {
            'name': self.name,
            'description': self.description,
            'source': self.source,
            'split': self.split,
            'done': self.done,
            'groups': list(self.groups),
            'cells': [c.to_dict() for c in self.cells],
        }


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); sd 0 for a single value."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (json.dumps would write the invalid token NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(cell: CellResult) -> list[str]:
    n = f'{len(cell.runs)}/{len(cell.seeds)}'
    thr = '–' if cell.cam_threshold is None else f'{cell.cam_threshold:g}'
    cols = [cell.name.rsplit('/', 1)[-1] if cell.group else cell.name, n]
    cols += [cell.stats[k].format() for k, _ in METRICS]
    cols += [thr, cell.stats['best_threshold'].format(2), cell.stats['train_seconds'].format(0)]
    return cols


def format_markdown(result: StudyResult) -> str:
    """The report: per study (group) a table, rows = cells, metrics as mean ± sd over seeds (n = runs)."""
    head = ['cell', 'n', *[t for _, t in METRICS], 'CAM thr', 'MaxBoxAcc thr', 'train s']
    lines = [f'# Study {result.name}', '']
    if result.description:
        lines += [result.description, '']
    lines += [
        f'Split `{result.split}`; metrics in percent, mean ± sd (sample sd, n − 1) over the finished seeds; '
        "`n` = finished/asked seeds. GT-known Loc and Top-1 Loc use the recipe's fixed `CAM thr`; "
        'MaxBoxAcc (IoU 50) peaks at `MaxBoxAcc thr`; MaxBoxAccV2 is the mean over IoU 30/50/70. '
        '`train s` is the training loop time per run (validation excluded).',
        '',
    ]
    if not result.done:
        missing = sum(len(c.seeds) - len(c.runs) for c in result.cells)
        lines += [f'**Incomplete**: {missing} run(s) not finished yet.', '']
    for group in result.groups:
        cells = [c for c in result.cells if c.group == group]
        if not cells:
            continue
        lines += [f'## {group}', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        lines += ['| ' + ' | '.join(_row(c)) + ' |' for c in cells]
        lines.append('')
        notes = [
            f'- `{c.name}`: `{c.recipe}` '
            + ' '.join(f'`{o}`' for o in c.overrides)
            + (
                f' (the same runs as {", ".join(f"`{s}`" for s in c.same_as)}: identical config)'
                if c.same_as
                else ''
            )
            for c in cells
        ]
        lines += ['Cells:', '', *notes, '']
        figures = [c for c in cells if c.figure]
        if figures:
            lines += [
                'Figure 3 (first seed, first test images: image | heatmap | overlay with boxes, '
                'ground truth red, estimate green at the MaxBoxAcc threshold):',
                '',
            ]
            lines += [f'![{c.name}]({c.figure})' for c in figures]
            lines.append('')
    return '\n'.join(lines)


def write_report(result: StudyResult, out: Path) -> tuple[Path, Path]:
    """``out/report.md`` and ``out/report.json``, each written whole (atomic)."""
    md, js = out / 'report.md', out / 'report.json'
    atomic_write_bytes(md, format_markdown(result).encode(), durable=False)
    atomic_write_bytes(js, (json.dumps(result.to_dict(), indent=1) + '\n').encode(), durable=False)
    return md, js
