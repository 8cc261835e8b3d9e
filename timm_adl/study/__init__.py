"""Studies: a grid of recipes x overrides x seeds trained with the project's trainer, resumable, with one
report (mean ± sd over seeds per cell, Markdown and JSON, a Figure-3 picture per cell).

``load_study`` reads a study file (``studies/`` ships the paper's Tables 1-3 for the synthetic set and
CUB), ``run_study`` runs it in a folder, ``collect_results`` / ``write_report`` rebuild the report.
"""

from __future__ import annotations

from .report import CellResult, MetricStat, RunResult, StudyResult, format_markdown, mean_sd, write_report
from .runner import collect_results, plan_jobs, run_study
from .spec import (
    CellSpec,
    DataSpec,
    StudyError,
    StudySpec,
    check_study,
    list_studies,
    load_study,
    resolve_study,
    studies_dir,
)

__all__ = [
    'CellResult',
    'CellSpec',
    'DataSpec',
    'MetricStat',
    'RunResult',
    'StudyError',
    'StudyResult',
    'StudySpec',
    'check_study',
    'collect_results',
    'format_markdown',
    'list_studies',
    'load_study',
    'mean_sd',
    'plan_jobs',
    'resolve_study',
    'run_study',
    'studies_dir',
    'write_report',
]
