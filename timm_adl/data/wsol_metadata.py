"""The metadata format of clovaai/wsolevaluation (CUB, ILSVRC, OpenImages30k).

``<metadata_root>/<split>/`` holds four comma-separated text files (one entry per line):

- ``image_ids.txt``: ``<image_id>`` (a path relative to the data root; images are ``<root>/<image_id>``);
  ``image_ids_proxy.txt`` is read instead with ``proxy=True`` (the reference's ImageNet proxy train set).
- ``class_labels.txt``: ``<image_id>,<label>``, 0-based.
- ``image_sizes.txt``: ``<image_id>,<width>,<height>``, the size the boxes are given in (may be empty for
  mask data sets and training splits).
- ``localization.txt``: either boxes, ``<image_id>,<x0>,<y0>,<x1>,<y1>`` (inclusive pixels, several lines
  for several boxes), or masks, ``<image_id>,<mask_path>,<ignore_path>`` (OpenImages; several lines for
  several instance masks, the ignore path given on the image's first line only, paths relative to
  ``mask_root``). Empty for splits without localization (``train``).

Splits are the folder names; ``'train-fullsup'`` (the paper's name for the localization-labelled split,
stored as ``val/`` in the reference) and ``'train-weaksup'`` (``train/``) are accepted as aliases.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from .dataset import WSOLDataset
from .records import (
    GT_BOX_MODES,
    WSOLDataError,
    WSOLRecord,
    check_box,
    check_choice,
    choice_error,
    join_inside,
    parse_number,
    read_table,
    require_file,
    select_boxes,
)

__all__ = ['SPLIT_ALIASES', 'WSOLMetadataDataset', 'load_wsol_metadata_records', 'resolve_metadata_dir']

SPLIT_ALIASES = {'train-fullsup': 'val', 'train-weaksup': 'train'}


def resolve_metadata_dir(metadata_root: str, split: str) -> str:
    """``<metadata_root>/<split>``, following the paper's split aliases; lists valid splits if absent."""
    for name in (split, SPLIT_ALIASES.get(split)):
        if name and os.path.isdir(os.path.join(metadata_root, name)):
            return os.path.join(metadata_root, name)
    if not os.path.isdir(metadata_root):
        raise FileNotFoundError(f'wsolevaluation metadata folder not found: {metadata_root}')
    found = sorted(d for d in os.listdir(metadata_root) if os.path.isdir(os.path.join(metadata_root, d)))
    valid = found + [a for a, target in SPLIT_ALIASES.items() if target in found]
    if not found:
        raise FileNotFoundError(f'no split folders (train/, val/, test/) in metadata folder {metadata_root}')
    raise choice_error(split, valid, f'split of {metadata_root}')


def _read_image_ids(path: str) -> list[tuple[int, str]]:
    seen: dict[str, int] = {}
    ids = []
    for lineno, (image_id,) in read_table(path, ',', 1):
        if image_id in seen:
            raise WSOLDataError(
                f'{path}:{lineno}: image id {image_id!r} repeated (first on line {seen[image_id]})'
            )
        seen[image_id] = lineno
        ids.append((lineno, image_id))
    return ids


def _read_keyed(path: str, ncols: int, kind: type, what: str) -> dict[str, tuple[int, list]]:
    """``{image_id: (line, parsed values)}`` for ``id,v1,...`` lines with a single entry per id."""
    table: dict[str, tuple[int, list]] = {}
    for lineno, fields in read_table(path, ',', ncols):
        image_id = fields[0]
        if image_id in table:
            raise WSOLDataError(
                f'{path}:{lineno}: image id {image_id!r} repeated (first on line {table[image_id][0]})'
            )
        table[image_id] = (lineno, [parse_number(v, kind, path, lineno, what) for v in fields[1:]])
    return table


def _read_localization(path: str) -> tuple[str | None, dict[str, list], dict[str, tuple[int, str]]]:
    """Return ``(kind, entries, ignores)``; kind is 'boxes', 'masks' or None for an empty file.

    Box entries are ``(line, (x0, y0, x1, y1))``; mask entries and ignores are ``(line, path)``.
    """
    kind = None
    entries: dict[str, list] = defaultdict(list)
    ignores: dict[str, tuple[int, str]] = {}
    for lineno, fields in read_table(path, ',', (3, 5)):
        line_kind = 'boxes' if len(fields) == 5 else 'masks'
        if kind is None:
            kind = line_kind
        elif kind != line_kind:
            raise WSOLDataError(
                f'{path}:{lineno}: a {line_kind[:-1]} line in a file of {kind} (first line format)'
            )
        image_id = fields[0]
        if kind == 'boxes':
            box = tuple(parse_number(v, float, path, lineno, 'box coordinate') for v in fields[1:])
            entries[image_id].append((lineno, box))
            continue
        mask_path, ignore_path = fields[1].strip(), fields[2].strip()
        if not mask_path:
            raise WSOLDataError(f'{path}:{lineno}: empty mask path for image {image_id!r}')
        if ignore_path:
            if image_id in ignores and ignores[image_id][1] != ignore_path:
                raise WSOLDataError(
                    f'{path}:{lineno}: second ignore path {ignore_path!r} for image {image_id!r} '
                    f'(already {ignores[image_id][1]!r} on line {ignores[image_id][0]}; one ignore mask per image)'
                )
            ignores.setdefault(image_id, (lineno, ignore_path))
        entries[image_id].append((lineno, mask_path))
    return kind, dict(entries), ignores


def _mask_file(mask_root: str, rel: str, image_id: str, where: str) -> str:
    path = join_inside(mask_root, rel, where, 'mask path')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'mask of image {image_id!r} ({where}) not found: {path}')
    return path


def _sample_per_class(ids: list[tuple[int, str]], labels: dict, n: int, seed: int, path: str) -> list:
    """Keep ``n`` random images per class (the reference's ``num_val_sample_per_class``), seeded."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (_, image_id) in enumerate(ids):
        by_class[labels[image_id][1][0]].append(i)
    rng = np.random.default_rng(seed)
    keep = []
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < n:
            raise ValueError(
                f'num_samples_per_class={n} but class {label} has only {len(members)} images in {path}'
            )
        keep.extend(rng.choice(members, n, replace=False).tolist())
    return [ids[i] for i in sorted(keep)]


def load_wsol_metadata_records(
    root: str | os.PathLike,
    split: str,
    metadata_root: str | os.PathLike | None = None,
    mask_root: str | os.PathLike | None = None,
    proxy: bool = False,
    gt_box_mode: str = 'all',
    num_samples_per_class: int = 0,
    seed: int = 0,
    localization: bool = True,
    localization_file: str = 'localization.txt',
) -> list[WSOLRecord]:
    """Parse and check one split of the wsolevaluation format.

    Args:
        root: data root; image ``<root>/<image_id>``.
        split: folder name under ``metadata_root`` (or an alias, see the module docstring).
        metadata_root: folder holding the split folders (the reference's ``metadata/<DATASET>``);
            default ``<root>/metadata``.
        mask_root: where mask paths are relative to (default ``root``).
        localization: read ``image_sizes.txt`` and ``localization.txt`` (not needed for training).
        localization_file: another file of the same formats to read instead of ``localization.txt``
            (e.g. the ``masks.txt`` that :mod:`timm_adl.data.synthetic` writes next to its boxes).
        num_samples_per_class: keep this many images per class, drawn with ``seed`` (0 keeps all).
    """
    check_choice(gt_box_mode, GT_BOX_MODES, 'gt_box_mode')
    root = os.fspath(root)
    metadata_root = os.path.join(root, 'metadata') if metadata_root is None else os.fspath(metadata_root)
    mask_root = root if mask_root is None else os.fspath(mask_root)
    split_dir = resolve_metadata_dir(metadata_root, split)

    ids_file = require_file(
        os.path.join(split_dir, 'image_ids_proxy.txt' if proxy else 'image_ids.txt'), 'image id list'
    )
    labels_file = require_file(os.path.join(split_dir, 'class_labels.txt'), 'class label file')
    ids = _read_image_ids(ids_file)
    labels = _read_keyed(labels_file, 2, int, 'class label')
    for lineno, image_id in ids:
        if image_id not in labels:
            raise WSOLDataError(f'image id {image_id!r} ({ids_file}:{lineno}) has no label in {labels_file}')
        label_line, (label,) = labels[image_id]
        if label < 0:
            raise WSOLDataError(f'{labels_file}:{label_line}: class label must be >= 0, got {label}')
    if num_samples_per_class:
        ids = _sample_per_class(ids, labels, int(num_samples_per_class), seed, labels_file)

    kind, entries, ignores, sizes = None, {}, {}, {}
    if localization:
        loc_file = require_file(os.path.join(split_dir, localization_file), 'localization file')
        kind, entries, ignores = _read_localization(loc_file)
        if kind == 'boxes':
            sizes_file = require_file(os.path.join(split_dir, 'image_sizes.txt'), 'image size file')
            sizes = _read_keyed(sizes_file, 3, int, 'image size')

    records = []
    for lineno, image_id in ids:
        path = join_inside(root, image_id, f'{ids_file}:{lineno}')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'image {image_id!r} ({ids_file}:{lineno}) not found: {path}')
        record = dict(image_id=image_id, path=path, label=labels[image_id][1][0])
        if kind is not None and image_id not in entries:
            raise WSOLDataError(f'image id {image_id!r} ({ids_file}:{lineno}) has no entry in {loc_file}')
        if kind == 'boxes':
            if image_id not in sizes:
                raise WSOLDataError(
                    f'image id {image_id!r} ({ids_file}:{lineno}) has no size in {sizes_file}'
                )
            size_line, size = sizes[image_id]
            if min(size) < 1:
                raise WSOLDataError(f'{sizes_file}:{size_line}: image size must be positive, got {size}')
            for box_line, box in entries[image_id]:
                check_box(box, tuple(size), image_id, f'{loc_file}:{box_line}')
            boxes = [box for _, box in entries[image_id]]
            record.update(size=tuple(size), boxes=select_boxes(boxes, gt_box_mode))
        elif kind == 'masks':
            mask_files = [
                _mask_file(mask_root, rel, image_id, f'{loc_file}:{line}') for line, rel in entries[image_id]
            ]
            ignore_file = None
            if image_id in ignores:
                ignore_line, rel = ignores[image_id]
                ignore_file = _mask_file(mask_root, rel, image_id, f'{loc_file}:{ignore_line}')
            record.update(mask_paths=tuple(mask_files), ignore_path=ignore_file)
        records.append(WSOLRecord(**record))
    if not records:
        raise WSOLDataError(f'split {split!r} is empty: no image ids in {ids_file}')
    return records


class WSOLMetadataDataset(WSOLDataset):
    """A data set in wsolevaluation's metadata format (see the module docstring).

    Extra keyword arguments go to :class:`WSOLDataset` (``img_size``, ``mean``, ``std``, ``transform``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = 'test',
        is_training: bool = False,
        metadata_root: str | os.PathLike | None = None,
        mask_root: str | os.PathLike | None = None,
        proxy: bool = False,
        gt_box_mode: str = 'all',
        num_samples_per_class: int = 0,
        seed: int = 0,
        localization_file: str = 'localization.txt',
        **kwargs,
    ) -> None:
        records = load_wsol_metadata_records(
            root,
            split,
            metadata_root=metadata_root,
            mask_root=mask_root,
            proxy=proxy,
            gt_box_mode=gt_box_mode,
            num_samples_per_class=num_samples_per_class,
            seed=seed,
            localization=not is_training,
            localization_file=localization_file,
        )
        super().__init__(records, is_training=is_training, **kwargs)
        self.root = os.fspath(root)
        self.split = split
