"""Run a study: every (cell, seed) trained with the project's trainer, scored, and the report written.

Layout of a study folder ``OUT``::

    OUT/.timm-adl.lock            held while a study runs here (two studies never share a folder)
    OUT/study.json                the resolved study (cells, overrides, seeds) of the last invocation
    OUT/data/<variant>/           the synthetic sets, made once
    OUT/runs/<cell>/seed<k>/      the trainer's run folder (config.yaml, best.safetensors, resume/, ...)
        result.json               written last, atomically: its presence means "finished"
        figure.png                the run's Figure-3 picture
    OUT/figures/<cell>.png        the first seed's picture
    OUT/report.md, report.json

Resume rules: a run with ``result.json`` is never trained again; a run without it continues from its
newest checkpoint (``run_training(resume=True)``, bit-exact on CPU), or starts. A finished run whose saved
config differs from what the study file now asks for stops the study before any training, naming the cell.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..files import atomic_copy, atomic_write_bytes
from .data import data_overrides, data_paths, prepare_data
from .report import CellResult, RunResult, StudyResult, write_report
from .spec import BEST_REF, CellSpec, StudyError, StudySpec

__all__ = ['RESULT_NAME', 'StudyJob', 'collect_results', 'plan_jobs', 'run_study']

RESULT_NAME = 'result.json'
FIGURE_NAME = 'figure.png'


@dataclass(frozen=True)
class StudyJob:
    """One (cell, seed) run. Cells asking for the same config at the same seed share one run: the later
    ones point at the first one's folder (``same_as``) instead of training it again."""

    cell: CellSpec
    seed: int
    run_dir: Path
    config: Any  # the TrainConfig it trains
    same_as: str | None = None  # label of the job whose run this one shares

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_NAME

    @property
    def done(self) -> bool:
        return self.result_path.is_file()

    @property
    def label(self) -> str:
        return f'{self.cell.name} seed {self.seed}'


def run_dir(out: Path, cell: CellSpec | str, seed: int) -> Path:
    name = cell if isinstance(cell, str) else cell.name
    return out / 'runs' / name / f'seed{seed}'


def _run_key(cfg) -> str:
    """What a run computes: its config without the keys that only say where and how it runs."""
    from ..train import config_to_dict
    from ..train.config import RUNTIME_KEYS

    data = {k: v for k, v in config_to_dict(cfg).items() if k not in RUNTIME_KEYS}
    return json.dumps(data, sort_keys=True, default=str)


def plan_jobs(
    spec: StudySpec,
    out: Path,
    *,
    data_dir: str | None = None,
    metadata_dir: str | None = None,
    device: str | None = None,
) -> list[StudyJob]:
    """Every (cell, seed) in run order (cells in dependency order, seeds as given), with its config."""
    jobs: list[StudyJob] = []
    owners: dict[str, StudyJob] = {}
    folders: dict[
        tuple[str, int], Path
    ] = {}  # where each (cell, seed)'s run lives (a shared one: its owner's)
    for cell in spec.cells:
        data = data_paths(cell.data, out, data_dir, metadata_dir)
        for seed in cell.seeds:
            folder = run_dir(out, cell, seed)
            overrides = _resolve_refs(cell, seed, spec, folders) + data_overrides(data)
            cfg = job_config(cell, overrides, seed, folder, device)
            owner = owners.setdefault(_run_key(cfg), StudyJob(cell, seed, folder, cfg))
            if owner.cell is not cell:
                owner = StudyJob(cell, seed, owner.run_dir, owner.config, same_as=owner.label)
            jobs.append(owner)
            folders[cell.name, seed] = owner.run_dir
    return jobs


def _resolve_refs(
    cell: CellSpec, seed: int, spec: StudySpec, folders: dict[tuple[str, int], Path]
) -> list[str]:
    """``{best:CELL}`` -> that cell's best weights for ``seed`` (or for its only seed)."""

    def weights(match) -> str:
        dep = spec.cell(match.group(1))
        dep_seed = seed if seed in dep.seeds else dep.seeds[0]
        return str(folders[dep.name, dep_seed] / 'best.safetensors')

    return [BEST_REF.sub(weights, o) for o in cell.overrides]


def job_config(cell: CellSpec, overrides: list[str], seed: int, folder: Path, device: str | None):
    """The ``TrainConfig`` of one run: recipe, the cell's resolved overrides, data paths, seed and folder."""
    from ..train import load_config
    from ..train.recipes import resolve_recipe

    overrides = [*overrides, f'seed={seed}', f'output_dir={folder}']
    if device is not None:
        overrides.append(f'device={device}')
    try:
        return load_config(resolve_recipe(cell.recipe), overrides)
    except ValueError as err:
        raise StudyError(f'cell {cell.name!r}: {err}') from None


def _config_diffs(saved: dict, now: dict, prefix: str = '') -> list[str]:
    from ..train.config import RUNTIME_KEYS

    diffs = []
    for key in sorted(set(saved) | set(now)):
        name = prefix + key
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != 'model_kwargs':
            diffs += _config_diffs(a, b, name + '.')
        elif a != b and name not in RUNTIME_KEYS:
            diffs.append(f'{name}: {a!r} -> {b!r}')
    return diffs


def check_saved_config(job: StudyJob) -> None:
    """A finished or started run must have been trained with the config the study now asks for."""
    import yaml

    from ..train import config_to_dict, load_config

    saved_path = job.run_dir / 'config.yaml'
    if not saved_path.is_file():
        return
    try:  # through load_config: a key added to the trainer since counts as its default, not as a change
        saved = config_to_dict(load_config(saved_path))
    except ValueError:  # a key since removed: compare the file as it is
        saved = yaml.safe_load(saved_path.read_text(encoding='utf-8')) or {}
    diffs = _config_diffs(saved, config_to_dict(job.config))
    if diffs:
        more = '; ...' if len(diffs) > 3 else ''
        raise StudyError(
            f'{job.label} {"finished" if job.done else "started"} with another config than the study now asks '
            f'for ({"; ".join(diffs[:3])}'
            f'{more}): use another --out, or delete {job.run_dir} to run it again'
        )


def _relative(path: Path, out: Path) -> str:
    return os.path.relpath(path, out)


def train_and_score(
    job: StudyJob, out: Path, *, device: str, progress: bool, figure_images: int
) -> RunResult:
    """Train (or resume) one run, score it on the study's split, write its ``result.json`` last."""
    from ..train import run_training
    from .figures import save_run_figure
    from .scoring import score_run

    summary = run_training(job.config, resume=True, progress=progress)
    weights = Path(summary['checkpoints']['best'])
    score = score_run(weights, job.cell.eval_split, device=device, figure_images=figure_images)
    figure = None
    if score.figure is not None:
        thr = score.best_threshold
        title = f'{job.cell.name} seed {job.seed}'
        figure = _relative(save_run_figure(score.figure, thr, job.run_dir / FIGURE_NAME, title), out)
    result = RunResult(
        cell=job.cell.name,
        seed=job.seed,
        split=job.cell.eval_split,
        metrics=score.metrics,
        cam_threshold=score.cam_threshold,
        best_threshold=score.best_threshold,
        cam_method=score.cam_method,
        num_images=score.num_images,
        train_seconds=float(summary['train_seconds']),
        eval_seconds=score.eval_seconds,
        best_epoch=int(summary['best_epoch']),
        epochs=int(summary['epochs']),
        weights=_relative(weights, out),
        figure=figure,
    )
    result.write(job.result_path)
    return result


def collect_results(spec: StudySpec, out: Path, jobs: Sequence[StudyJob] | None = None) -> StudyResult:
    """The study's results from the ``result.json`` files on disk (finished runs only)."""
    out = Path(out).resolve()
    jobs = plan_jobs(spec, out) if jobs is None else jobs
    cells = []
    for cell in spec.cells:
        runs = [
            replace(RunResult.read(j.result_path), cell=cell.name)  # a shared run: under this cell's name
            for j in jobs
            if j.cell.name == cell.name and j.done
        ]
        figure = None
        first = next((r for r in sorted(runs, key=lambda r: cell.seeds.index(r.seed)) if r.figure), None)
        if first is not None and (out / first.figure).is_file():
            dst = out / 'figures' / f'{cell.name}.png'
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(out / first.figure, dst)
            figure = _relative(dst, out)
        shared = [j.same_as.rsplit(' seed ', 1)[0] for j in jobs if j.cell.name == cell.name and j.same_as]
        cells.append(CellResult.of(cell, runs, figure, tuple(dict.fromkeys(shared))))
    splits = sorted({c.eval_split for c in spec.cells})
    return StudyResult(
        name=spec.name,
        description=spec.description,
        groups=spec.groups,
        cells=tuple(cells),
        split=', '.join(splits),
        source=str(spec.path) if spec.path else '',
    )


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f'{seconds:.0f} s'
    if seconds < 5400:
        return f'{seconds / 60:.0f} min'
    return f'{seconds / 3600:.1f} h'


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _write_plan(spec: StudySpec, jobs: Sequence[StudyJob], out: Path) -> None:
    """``study.json``: the resolved study of the last invocation (what each cell runs, and where)."""
    cells = []
    for c in spec.cells:
        own = [j for j in jobs if j.cell.name == c.name]
        cells.append(
            {
                'name': c.name,
                'group': c.group,
                'recipe': c.recipe,
                'overrides': list(c.overrides),
                'seeds': list(c.seeds),
                'data': c.data.to_dict(),
                'eval_split': c.eval_split,
                'runs': [_relative(j.run_dir, out) for j in own],
            }
        )
    data = {'name': spec.name, 'source': str(spec.path) if spec.path else None, 'cells': cells}
    atomic_write_bytes(out / 'study.json', (json.dumps(data, indent=1) + '\n').encode(), durable=False)


def run_study(
    spec: StudySpec,
    out: str | os.PathLike,
    *,
    device: str | None = None,
    data_dir: str | None = None,
    metadata_dir: str | None = None,
    progress: bool = True,
    report_only: bool = False,
    figure_images: int = 8,
    log: Callable[[str], None] = _stderr,
) -> StudyResult:
    """Train and score every unfinished (cell, seed) of ``spec`` in ``out``, then write the report.

    Args:
        spec: the study (``load_study``; ``spec.select(names)`` for some cells only).
        out: the study folder; created if missing; locked while this runs.
        device: the recipes' ``device`` key for every run (None: the recipes' own), and where scoring runs.
        data_dir, metadata_dir: replace ``data.root`` / ``data.metadata_root`` of the cells that read a
            data set on disk (CUB); synthetic cells make their own.
        progress: per-epoch progress bars of the trainer (on a terminal).
        report_only: train nothing; rebuild the report from the finished runs.
        figure_images: test images in each cell's Figure-3 picture.
        log: receives the progress lines.
    """
    from ..train.lock import acquire_run_lock

    out = Path(out).resolve()
    lock = acquire_run_lock(out, warn=log)
    try:
        jobs = plan_jobs(spec, out, data_dir=data_dir, metadata_dir=metadata_dir, device=device)
        if not report_only:
            _write_plan(spec, jobs, out)
            _run_jobs(
                spec,
                jobs,
                out,
                device=device,
                progress=progress,
                figure_images=figure_images,
                log=log,
            )
        result = collect_results(spec, out, jobs)
        md, js = write_report(result, out)
        log(f'report: {md} and {js}' + ('' if result.done else ' (incomplete)'))
        return result
    finally:
        lock.release()


def _run_jobs(
    spec: StudySpec, jobs: Sequence[StudyJob], out: Path, *, device: str | None,
    progress: bool, figure_images: int, log: Callable[[str], None],
) -> None:  # fmt: skip
    # Every saved run is checked before any training: a changed study file stops here, not midway.
    for job in jobs:
        if job.same_as is None:
            check_saved_config(job)
    own = [j for j in jobs if j.same_as is None]
    todo = [j for j in own if not j.done]
    shared = len(jobs) - len(own)
    log(
        f'study {spec.name}: {len(own)} runs ({shared} more cell seeds share one), {len(own) - len(todo)} '
        f'finished, {len(todo)} to run, in {out}'
    )
    made: set = set()
    spent, ran = 0.0, 0
    for i, job in enumerate(own, 1):
        if job.done:
            continue
        if job.cell.data not in made:
            if job.cell.data.synthetic is not None:
                log(f'synthetic data {job.cell.data.synthetic!r} in {out / "data"}')
            prepare_data(job.cell.data, out)
            made.add(job.cell.data)
        t0 = time.perf_counter()
        log(f'[{i}/{len(own)}] {job.label} ...')
        result = train_and_score(
            job, out, device=device or job.config.device, progress=progress, figure_images=figure_images
        )
        took = time.perf_counter() - t0
        spent, ran = spent + took, ran + 1
        left = sum(1 for j in own[i:] if not j.done)
        v2 = result.metrics.get('max_box_acc_v2')
        shown = f'MaxBoxAccV2 {v2:.1f}' if v2 is not None else 'no boxes'
        eta = f', ETA {_eta(spent / ran * left)}' if left else ''
        log(f'[{i}/{len(own)}] {job.label} ... done in {took:.0f} s ({shown}){eta}')
