"""Write splits in wsolevaluation's metadata format, and carve a validation split from ``train``.

The format is the one :mod:`timm_adl.data.wsol_metadata` reads (see its docstring). A metadata folder is
written beside its final place and swapped in whole, so a loader never sees half of the splits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from .records import WSOLRecord

__all__ = ['PreparedDataset', 'carve_val_split', 'replace_folder', 'write_wsol_metadata']


@dataclass(frozen=True)
class PreparedDataset:
    """Where a prepared data set lives: pass ``data.root`` and ``data.metadata_root`` to ``timm-adl train``."""

    name: str  # 'CUB-200-2011', 'ImageNet-1k', 'OpenImages30k'
    root: Path  # image ids are relative to it
    metadata_root: Path  # holds one folder per split
    split_sizes: dict[str, int] = field(default_factory=dict)
    val_source: str = ''  # where the validation (train-fullsup) split comes from
    mask_root: Path | None = None  # mask data sets: where mask paths are relative to (eval --mask-dir)

    def overrides(self) -> str:
        return f'data.root={self.root} data.metadata_root={self.metadata_root}'


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _split_files(records: Sequence[WSOLRecord]) -> dict[str, str]:
    ids, labels, sizes, boxes = [], [], [], []
    for r in records:
        ids.append(r.image_id)
        labels.append(f'{r.image_id},{r.label}')
        if r.size is not None:
            sizes.append(f'{r.image_id},{r.size[0]},{r.size[1]}')
        boxes.extend(f'{r.image_id},' + ','.join(_number(v) for v in box) for box in r.boxes)
    lines = {
        'image_ids.txt': ids,
        'class_labels.txt': labels,
        'image_sizes.txt': sizes,
        'localization.txt': boxes,
    }
    return {name: ''.join(line + '\n' for line in rows) for name, rows in lines.items()}


def replace_folder(staged: Path, dest: Path) -> None:
    """Put the folder ``staged`` at ``dest``, replacing an older ``dest`` only once the new one is whole."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.old-', dir=dest.parent))
        os.replace(dest, old / dest.name)
    os.replace(staged, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_wsol_metadata(
    metadata_root: str | os.PathLike,
    splits: Mapping[str, Sequence[WSOLRecord]],
    info: Mapping[str, object] | None = None,
    copies: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write ``<metadata_root>/<split>/{image_ids,class_labels,image_sizes,localization}.txt`` per split.

    ``info`` is written as ``<metadata_root>/prepare.json`` (how the splits were made: sources, seed,
    sizes), so a run's data can be traced. ``copies`` maps ``'<split>/<file>'`` to a file to copy as is (a
    split taken from wsolevaluation). ``metadata_root`` is replaced whole, once everything is written.
    """
    root = Path(metadata_root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f'.{root.name}.new-', dir=root.parent))
    try:
        for split, records in splits.items():
            for name, text in _split_files(records).items():
                atomic_write_bytes(staged / split / name, text.encode(), durable=False)
        for rel, src in (copies or {}).items():
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staged / rel)
        if info is not None:
            atomic_write_bytes(staged / 'prepare.json', (json.dumps(info, indent=1) + '\n').encode())
        replace_folder(staged, root)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return root


def carve_val_split(
    records: Sequence[WSOLRecord], per_class: int, seed: int = 0
) -> tuple[list[WSOLRecord], list[WSOLRecord]]:
    """Split ``records`` into ``(train, val)`` with ``per_class`` images of every class in ``val``.

    Deterministic: classes in label order, each class's images sorted by id, then ``per_class`` of them
    drawn without replacement by ``numpy.random.default_rng(seed)``; both lists keep the input order. The
    drawn images leave ``train``, so model selection never scores an image the model was trained on.
    """
    if per_class < 1:
        raise ValueError(f'per_class must be >= 1, got {per_class}')
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_class[r.label].append(i)
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda i: records[i].image_id)
        if len(members) <= per_class:
            raise ValueError(
                f'class {label} has {len(members)} training images; a validation split of {per_class} '
                'per class needs more (lower --val-per-class)'
            )
        chosen.update(members[j] for j in rng.choice(len(members), per_class, replace=False))
    train = [r for i, r in enumerate(records) if i not in chosen]
    val = [r for i, r in enumerate(records) if i in chosen]
    return train, val
