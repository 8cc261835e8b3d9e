"""The packaged recipes: find them by name (``cub/resnet50_se_adl``) in a checkout or an installed wheel.

The YAML files live once, in the repository's top-level ``recipes/`` folder; the wheel ships that folder as
``timm_adl/recipes/`` (``package-dir`` in pyproject.toml). A recipe's name is its path under that folder
without ``.yaml``; its summary is the first line of its leading comment.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError

__all__ = ['RecipeInfo', 'list_packaged', 'list_recipes', 'packaged_dir', 'recipes_dir', 'resolve_recipe']

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RecipeInfo:
    name: str  # 'cub/resnet50_se_adl'
    path: Path
    summary: str  # first line of the file's leading comment ('' if none)


def packaged_dir(folder: str) -> Path:
    """``timm_adl/<folder>`` of an installed wheel, else ``<folder>/`` of the source checkout.

    The wheel ships the repository's top-level YAML folders (``recipes``, ``studies``) inside the package.
    """
    installed, checkout = _PACKAGE_DIR / folder, _PACKAGE_DIR.parent / folder
    for candidate in (installed, checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f'no {folder} folder: looked in {installed} (installed package) and {checkout} (source checkout); '
        'reinstall timm-adl'
    )


def recipes_dir() -> Path:
    """``timm_adl/recipes`` of an installed wheel, else ``recipes/`` of the source checkout."""
    return packaged_dir('recipes')


def _summary(path: Path) -> str:
    with path.open(encoding='utf-8') as f:
        first = f.readline().strip()
    return first.lstrip('#').strip() if first.startswith('#') else ''


def list_packaged(folder: str) -> list[tuple[str, Path, str]]:
    """``(name, path, summary)`` of every YAML file of :func:`packaged_dir`, sorted by name: the name is the
    path under the folder without ``.yaml``, the summary the first line of the leading comment."""
    root = packaged_dir(folder)
    paths = sorted(root.rglob('*.yaml'))
    return [(p.relative_to(root).with_suffix('').as_posix(), p, _summary(p)) for p in paths]


def list_recipes() -> list[RecipeInfo]:
    """Every packaged recipe, sorted by name."""
    return [RecipeInfo(*entry) for entry in list_packaged('recipes')]


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: an existing path as given, else a packaged recipe by name.

    ``cub/resnet50_se_adl``, ``cub/resnet50_se_adl.yaml`` and ``recipes/cub/resnet50_se_adl.yaml`` (the form
    the README and the checkpoint errors print) all name the packaged file, so they work without a checkout.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.as_posix().removesuffix('.yaml')
    name = name.removeprefix('./').removeprefix('recipes/')
    known = {r.name: r.path for r in list_recipes()}
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f'closest: {", ".join(close)}' if close else '`timm-adl recipes` lists them'
    raise ConfigError(
        f'recipe file not found: {os.fspath(name_or_path)} (nor a packaged recipe name; {hint})'
    )
