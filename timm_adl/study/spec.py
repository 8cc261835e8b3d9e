"""A study file: a grid of recipes x overrides x seeds, read from YAML into typed, fully resolved cells.

The format (``docs/study.md`` has it in full)::

    name: synthetic-table1
    description: one line for the report
    data: {synthetic: default, seed: 0}     # or {root: DIR, metadata_root: DIR} for CUB
    seeds: [0, 1, 2]
    eval_split: test
    overrides: [epochs=4]                    # every cell, before the cell's own
    cells:
      - {name: cam, recipe: synthetic/cam}
      - {name: adl_dr50, recipe: synthetic/adl, overrides: [adl.drop_rate=0.5]}
    grid:                                    # optional: recipes x named override sets -> cells
      recipes: {cam: synthetic/cam, adl: synthetic/adl}
      overrides: {g05: [adl.gamma=0.5], g09: [adl.gamma=0.9]}   # cells cam-g05, adl-g05, ...
    include: [table1, table2]                # optional: other studies' cells, as <their name>/<cell>

An override value may hold ``{best:CELL}``: the best weights of cell CELL for the same seed (or of its only
seed), so a fine-tuning cell can start from a pretraining cell; cells are ordered so that CELL runs first.
Every error is one line naming the bad key or value (unknown names list the closest valid ones).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..train.config import ConfigError
from ..train.recipes import list_packaged, packaged_dir

__all__ = [
    'EVAL_SPLITS',
    'CellSpec',
    'DataSpec',
    'StudyError',
    'StudyInfo',
    'StudySpec',
    'check_cell',
    'check_study',
    'list_studies',
    'load_study',
    'resolve_study',
    'studies_dir',
]

EVAL_SPLITS = ('test', 'val', 'train-fullsup')
STUDY_KEYS = ('name', 'description', 'data', 'seeds', 'eval_split', 'overrides', 'cells', 'grid', 'include')
CELL_KEYS = ('name', 'recipe', 'overrides', 'seeds', 'data', 'description')
GRID_KEYS = ('recipes', 'overrides', 'seeds', 'data')
DATA_KEYS = ('synthetic', 'seed', 'sizes', 'root', 'metadata_root')
# a cell name is a folder path under runs/: letters, digits, '_', '-', '.', nested with '/'
_NAME = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$')
BEST_REF = re.compile(r'\{best:([^{}]+)\}')


class StudyError(ConfigError):
    """A study file that cannot run: one line naming the bad key or value."""


@dataclass(frozen=True)
class DataSpec:
    """Where a cell's images come from: a built-in synthetic variant (made once per study folder) or a
    data set on disk (``root`` / ``metadata_root``; None keeps the recipe's)."""

    synthetic: str | None = None  # variant name of timm_adl.data.synthetic ('default', 'pretrain', ...)
    seed: int = 0  # the synthetic set's seed (the images), not the training seed
    sizes: tuple[tuple[str, int], ...] | None = (
        None  # synthetic split sizes, (split, n) pairs (None: the variant's)
    )
    root: str | None = None
    metadata_root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in DATA_KEYS}
        out['sizes'] = dict(self.sizes) if self.sizes is not None else None
        return out


@dataclass(frozen=True)
class CellSpec:
    """One row of a study: a recipe with overrides, trained once per seed (fully resolved)."""

    name: str  # unique; also its folder under runs/ ('table1/cam')
    recipe: str  # a packaged recipe name or a recipe file path
    overrides: tuple[str, ...] = ()  # the study's common overrides, then the cell's own
    seeds: tuple[int, ...] = (0,)
    data: DataSpec = field(default_factory=DataSpec)
    eval_split: str = 'test'
    group: str = ''  # the study the cell came from (one report table per group)
    description: str = ''

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The cells whose weights an override names (``{best:CELL}``), in order of first use."""
        found = [m for text in self.overrides for m in BEST_REF.findall(text)]
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class StudySpec:
    name: str
    description: str
    cells: tuple[CellSpec, ...]  # in run order: every cell after the cells it depends on
    groups: tuple[str, ...]  # report tables, in file order
    path: Path | None = None

    def cell(self, name: str) -> CellSpec:
        for c in self.cells:
            if c.name == name:
                return c
        raise StudyError(f'unknown cell {name!r}{_closest(name, [c.name for c in self.cells])}')

    def select(self, names: Sequence[str]) -> StudySpec:
        """Only the named cells and the cells they depend on (a fine-tuning cell needs its pretraining)."""
        keep: set[str] = set()
        todo = [self.cell(n).name for n in names]
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo.extend(self.cell(name).depends_on)
        return replace(self, cells=tuple(c for c in self.cells if c.name in keep))


@dataclass(frozen=True)
class StudyInfo:
    name: str  # 'synthetic/table1'
    path: Path
    summary: str


# ---------------------------------------------------------------------------------------------------------
# shipped studies


def studies_dir() -> Path:
    """``timm_adl/studies`` of an installed wheel, else ``studies/`` of the source checkout."""
    return packaged_dir('studies')


def list_studies() -> list[StudyInfo]:
    """Every shipped study file, sorted by name (its path under ``studies/`` without ``.yaml``)."""
    return [StudyInfo(*entry) for entry in list_packaged('studies')]


def resolve_study(name_or_path: str | os.PathLike, base: Path | None = None) -> Path:
    """A study file: an existing path (relative to ``base`` first, when given), else a shipped study name."""
    path = Path(name_or_path)
    for candidate in ([base / path] if base is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_file():
            return candidate
        if candidate.with_suffix('.yaml').is_file() and candidate.suffix != '.yaml':
            return candidate.with_suffix('.yaml')
    name = path.as_posix().removesuffix('.yaml').removeprefix('./').removeprefix('studies/')
    known = {s.name: s.path for s in list_studies()}
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f'closest: {", ".join(close)}' if close else '`timm-adl study --list` lists them'
    raise StudyError(f'study file not found: {os.fspath(name_or_path)} (nor a shipped study name; {hint})')


# ---------------------------------------------------------------------------------------------------------
# parsing


def _closest(value: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.6)
    return f' (did you mean {close[0]!r}?)' if close else ''


def _check_keys(data: Mapping, allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise StudyError(
                f'{where}: unknown key {key!r}{_closest(str(key), allowed)}; expected {", ".join(allowed)}'
            )


def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StudyError(f'{where} must be a mapping, got {value!r}')
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise StudyError(f'{where} must be a list of key=value strings, got {value!r}')
    for item in value:
        if not isinstance(item, str) or '=' not in item:
            raise StudyError(f'{where}: {item!r} is not a key=value override')
    return tuple(value)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ok = (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    )
    if not ok:
        raise StudyError(f'{where} must be a non-empty list of integers, got {value!r}')
    if len(set(value)) != len(value):
        raise StudyError(f'{where} has repeats: {list(value)}')
    return tuple(value)


def _data(value: Any, where: str, base: DataSpec | None = None) -> DataSpec:
    data = _mapping(value, where)
    _check_keys(data, DATA_KEYS, where)
    if not data and base is not None:
        return base
    spec = DataSpec(**{k: data[k] for k in data})
    if spec.synthetic is not None and (spec.root or spec.metadata_root):
        raise StudyError(f'{where}: give either synthetic (a built-in set) or root/metadata_root, not both')
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool):
        raise StudyError(f'{where}.seed must be an integer, got {spec.seed!r}')
    if spec.sizes is not None:
        sizes = _mapping(spec.sizes, f'{where}.sizes')
        if not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
            raise StudyError(f'{where}.sizes must map split names to image counts, got {dict(sizes)!r}')
        spec = replace(spec, sizes=tuple(sorted((str(k), int(v)) for k, v in sizes.items())))  # hashable
    if spec.synthetic is not None:
        from .data import check_variant

        check_variant(spec.synthetic, where + '.synthetic')
    return spec


def _cell_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or '..' in name.split('/'):
        raise StudyError(f'{where}: cell name {name!r} must be letters, digits, _ - . (nested with /)')
    return name


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' line {mark.line + 1}' if mark is not None else ''
        raise StudyError(f'study {path}{where} is not valid YAML') from None
    if not isinstance(data, dict):
        raise StudyError(f'study {path} must be a mapping of keys, got {type(data).__name__}')
    return data


def _grid_cells(grid: Mapping, where: str) -> list[dict]:
    """``recipes`` x ``overrides`` (both name -> value mappings) as cell mappings named ``<recipe>-<set>``."""
    _check_keys(grid, GRID_KEYS, where)
    recipes = _mapping(grid.get('recipes'), where + '.recipes')
    sets = _mapping(grid.get('overrides'), where + '.overrides') or {'': []}
    if not recipes:
        raise StudyError(f'{where}.recipes must name at least one recipe (label: recipe)')
    cells = []
    for r_label, recipe in recipes.items():
        for s_label, overrides in sets.items():
            cell = {'name': f'{r_label}-{s_label}' if s_label else str(r_label), 'recipe': recipe}
            cell['overrides'] = list(_str_list(overrides, f'{where}.overrides.{s_label}'))
            for key in ('seeds', 'data'):
                if key in grid:
                    cell[key] = grid[key]
            cells.append(cell)
    return cells


def _prefixed(text: str, prefix: str) -> str:
    return BEST_REF.sub(lambda m: '{best:' + prefix + m.group(1) + '}', text)


@dataclass(frozen=True)
class _Defaults:
    """What a study file gives every one of its cells."""

    group: str
    seeds: tuple[int, ...]
    split: str
    overrides: tuple[str, ...]
    data: DataSpec
    folder: Path  # the study file's folder: recipe files and includes are found from it


def _cell(raw: Any, where: str, defaults: _Defaults) -> CellSpec:
    raw = _mapping(raw, where)
    _check_keys(raw, CELL_KEYS, where)
    for key in ('name', 'recipe'):
        if not raw.get(key):
            raise StudyError(f'{where}: {key} is required')
    recipe = str(raw['recipe'])
    if not Path(recipe).is_absolute() and (defaults.folder / recipe).is_file():
        recipe = str((defaults.folder / recipe).resolve())  # a recipe file beside the study file
    return CellSpec(
        name=_cell_name(raw['name'], where),
        recipe=recipe,
        overrides=defaults.overrides + _str_list(raw.get('overrides'), f'{where}.overrides'),
        seeds=_seeds(raw['seeds'], f'{where}.seeds') if 'seeds' in raw else defaults.seeds,
        data=_data(raw.get('data'), f'{where}.data', base=defaults.data),
        eval_split=defaults.split,
        group=defaults.group,
        description=str(raw.get('description') or ''),
    )


def _defaults(data: Mapping, path: Path, seeds: Sequence[int] | None, where: str) -> _Defaults:
    name = data.get('name') or path.stem
    if not isinstance(name, str):
        raise StudyError(f'{where}: name must be a string, got {name!r}')
    split = data.get('eval_split', 'test')
    if split not in EVAL_SPLITS:
        hint = _closest(split, EVAL_SPLITS)
        raise StudyError(f'{where}: eval_split {split!r} must be one of {", ".join(EVAL_SPLITS)}{hint}')
    return _Defaults(
        group=name,
        seeds=_seeds(seeds, '--seeds')
        if seeds is not None
        else _seeds(data.get('seeds', [0]), f'{where}: seeds'),
        split=split,
        overrides=_str_list(data.get('overrides'), f'{where}: overrides'),
        data=_data(data.get('data'), f'{where}: data'),
        folder=path.parent,
    )


def _included(
    data: Mapping, path: Path, seeds: Sequence[int] | None, stack: tuple[Path, ...], where: str
) -> tuple[list[CellSpec], list[str]]:
    """The cells of the studies ``include`` names, as ``<file stem>/<cell>`` (their ``{best:}`` too)."""
    includes = data.get('include') or []
    if not isinstance(includes, list):
        raise StudyError(f'{where}: include must be a list of study names or files, got {includes!r}')
    cells: list[CellSpec] = []
    groups: list[str] = []
    for inc in includes:
        inc_path = resolve_study(str(inc), base=path.parent)
        if inc_path.resolve() in stack:
            raise StudyError(f'{where}: include {inc!r} includes itself (a cycle)')
        _, _, inc_cells, inc_groups = _parse(inc_path, seeds, (*stack, inc_path.resolve()))
        prefix = inc_path.stem + '/'
        for c in inc_cells:
            overrides = tuple(_prefixed(o, prefix) for o in c.overrides)
            cells.append(replace(c, name=prefix + c.name, overrides=overrides))
        groups += [g for g in inc_groups if g not in groups]
    return cells, groups


def _parse(
    path: Path, seeds: Sequence[int] | None, stack: tuple[Path, ...]
) -> tuple[str, str, list[CellSpec], list[str]]:
    """(name, description, cells in file order, report groups) of one study file and what it includes."""
    data = _read_yaml(path)
    where = f'study {path.name}'
    _check_keys(data, STUDY_KEYS, where)
    defaults = _defaults(data, path, seeds, where)
    raw_cells = data.get('cells') or []
    if not isinstance(raw_cells, list):
        raise StudyError(f'{where}: cells must be a list of mappings, got {raw_cells!r}')
    if data.get('grid') is not None:
        raw_cells = raw_cells + _grid_cells(_mapping(data['grid'], f'{where}: grid'), f'{where}: grid')
    cells = [_cell(raw, f'{where}: cells[{i}]', defaults) for i, raw in enumerate(raw_cells)]
    groups = [defaults.group] if cells else []
    inc_cells, inc_groups = _included(data, path, seeds, stack, where)
    groups += [g for g in inc_groups if g not in groups]
    description = str(data.get('description') or '').strip()
    return defaults.group, description, cells + inc_cells, groups


def _order(cells: list[CellSpec], where: str) -> tuple[CellSpec, ...]:
    """Cells in file order, each moved after the cells it depends on; a cycle is an error."""
    by_name: dict[str, CellSpec] = {}
    for c in cells:
        if c.name in by_name:
            raise StudyError(f'{where}: duplicate cell name {c.name!r}')
        by_name[c.name] = c
    for c in cells:
        for dep in c.depends_on:
            if dep not in by_name:
                raise StudyError(
                    f'{where}: cell {c.name!r} uses {{best:{dep}}}: no such cell{_closest(dep, by_name)}'
                )
            dep_seeds = by_name[dep].seeds
            missing = [s for s in c.seeds if s not in dep_seeds]
            if missing and len(dep_seeds) != 1:
                raise StudyError(
                    f'{where}: cell {c.name!r} needs {{best:{dep}}} for seeds {missing}, but {dep!r} trains '
                    f'seeds {list(dep_seeds)} (give it those seeds, or a single seed)'
                )
    done: list[CellSpec] = []
    state: dict[str, str] = {}

    def visit(c: CellSpec, chain: tuple[str, ...]) -> None:
        if state.get(c.name) == 'done':
            return
        if state.get(c.name) == 'active':
            raise StudyError(
                f'{where}: cells depend on each other in a cycle: {" -> ".join((*chain, c.name))}'
            )
        state[c.name] = 'active'
        for dep in c.depends_on:
            visit(by_name[dep], (*chain, c.name))
        state[c.name] = 'done'
        done.append(c)

    for c in cells:
        visit(c, ())
    return tuple(done)


def check_cell(cell: CellSpec) -> None:
    """The cell's recipe resolves and its overrides make a valid config (placeholders stand for a path)."""
    from ..train import load_config
    from ..train.recipes import resolve_recipe

    try:
        recipe = resolve_recipe(cell.recipe)
        load_config(recipe, [BEST_REF.sub('/placeholder.safetensors', o) for o in cell.overrides])
    except ConfigError as err:
        raise StudyError(f'cell {cell.name!r}: {err}') from None


def check_study(spec: StudySpec) -> None:
    """:func:`check_cell` for every cell of ``spec`` (after ``select``: only the cells that will run)."""
    for cell in spec.cells:
        check_cell(cell)


def load_study(
    source: str | os.PathLike, *, seeds: Sequence[int] | None = None, check: bool = True
) -> StudySpec:
    """Read a study file (a path or a shipped study name) into a :class:`StudySpec`.

    ``seeds`` replaces the study's default seeds (cells that name their own keep them). ``check`` also
    loads every cell's recipe with its overrides, so a typo fails here and not hours into the study.
    """
    path = resolve_study(source)
    name, description, cells, groups = _parse(path, seeds, (path.resolve(),))
    if not cells:
        raise StudyError(f'study {path.name} has no cells (give cells, grid or include)')
    ordered = _order(cells, f'study {path.name}')
    spec = StudySpec(name=name, description=description, cells=ordered, groups=tuple(groups), path=path)
    if check:
        check_study(spec)
    return spec
