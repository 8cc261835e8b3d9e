"""A cell's data: the built-in synthetic set, made once per study folder, or a data set on disk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .spec import DataSpec, StudyError

__all__ = [
    'PreparedData',
    'check_variant',
    'data_overrides',
    'data_paths',
    'prepare_data',
    'synthetic_config',
]


@dataclass(frozen=True)
class PreparedData:
    root: Path | None  # None: keep the recipe's data.root
    metadata_root: Path | None


def _variants() -> tuple[str, ...]:
    from ..data import synthetic

    return tuple(synthetic.SYNTHETIC_VARIANTS)


def check_variant(name: str, where: str) -> None:
    import difflib

    valid = _variants()
    if name not in valid:
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise StudyError(f'{where}: unknown synthetic variant {name!r}{hint}; expected {", ".join(valid)}')


def synthetic_config(spec: DataSpec):
    """The ``SyntheticConfig`` of ``spec``: its variant, with its split sizes if it gives them."""
    from ..data import synthetic

    check_variant(spec.synthetic, 'data.synthetic')
    cfg = synthetic.synthetic_variant(spec.synthetic)
    return cfg.replace(sizes=dict(spec.sizes)) if spec.sizes is not None else cfg


def synthetic_folder(spec: DataSpec) -> str:
    """``<variant>[-seed<k>][-<hash of sizes>]``: one folder per distinct set, so cells never fight over one."""
    name = spec.synthetic or 'data'
    if spec.seed:
        name += f'-seed{spec.seed}'
    if spec.sizes is not None:
        name += '-' + hashlib.sha1(json.dumps(dict(spec.sizes)).encode()).hexdigest()[:8]
    return name


def data_paths(
    spec: DataSpec, out: Path, data_dir: str | None = None, metadata_dir: str | None = None
) -> PreparedData:
    """Where a cell's data lives (nothing is made): ``out/data/<folder>`` for a synthetic set, else the
    given paths, ``data_dir`` / ``metadata_dir`` (``--data-dir`` / ``--metadata-root``) replacing
    ``root`` / ``metadata_root``; None keeps the recipe's."""
    if spec.synthetic is not None:
        root = out / 'data' / synthetic_folder(spec)
        return PreparedData(root, root / 'metadata')
    root, meta = data_dir or spec.root, metadata_dir or spec.metadata_root
    return PreparedData(Path(root).resolve() if root else None, Path(meta).resolve() if meta else None)


def prepare_data(spec: DataSpec, out: Path) -> PreparedData:
    """Make (or reuse: its manifest must match) the synthetic set of ``spec`` in ``out/data/``."""
    data = data_paths(spec, out)
    if spec.synthetic is not None:
        from ..data.synthetic import make_synthetic_wsol

        make_synthetic_wsol(data.root, seed=spec.seed, config=synthetic_config(spec))
    return data


def data_overrides(data: PreparedData) -> list[str]:
    out = []
    if data.root is not None:
        out.append(f'data.root={data.root}')
    if data.metadata_root is not None:
        out.append(f'data.metadata_root={data.metadata_root}')
    return out
