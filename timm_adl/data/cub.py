"""CUB-200-2011 from its official release layout.

``<root>/`` (or ``<root>/CUB_200_2011/``) holds ``images.txt`` (``id path``), ``image_class_labels.txt``
(``id class``, 1-based), ``train_test_split.txt`` (``id is_train``), ``bounding_boxes.txt``
(``id x y width height``, floats) and optionally ``classes.txt`` (``class name``); images are under
``images/<path>``.

Box convention: ``x0, y0, x1, y1 = x, y, x + width, y + height``, in pixels, kept inclusive as given.
This is how wsolevaluation's ``metadata/CUB/*/localization.txt`` was made (its first test image,
``Black_Footed_Albatross_0046_18``, has ``60 27 325 304`` in ``bounding_boxes.txt`` and
``60,27,385,331`` in ``localization.txt``), so scores match the reference's, not the ``- 1`` variant.
Labels are 0-based; image ids are the paths of ``images.txt`` (wsolevaluation's CUB ids).
"""

from __future__ import annotations

import os

from PIL import Image

from .dataset import WSOLDataset
from .records import (
    GT_BOX_MODES,
    WSOLDataError,
    WSOLRecord,
    check_box,
    check_choice,
    join_inside,
    parse_number,
    read_table,
    require_file,
)

__all__ = ['CUB_SPLITS', 'CUBDataset', 'load_cub_records']

CUB_SPLITS = ('train', 'test')
_REQUIRED = ('images.txt', 'image_class_labels.txt', 'train_test_split.txt', 'bounding_boxes.txt')


def _find_cub_root(root: str) -> str:
    for candidate in (root, os.path.join(root, 'CUB_200_2011')):
        if os.path.isfile(os.path.join(candidate, 'images.txt')):
            return candidate
    return require_file(os.path.join(root, 'images.txt'), 'CUB-200-2011 images.txt')


def _read_id_map(path: str, ncols: int) -> dict[str, tuple[int, list[str]]]:
    """``{id: (line, other fields)}``, rejecting duplicate ids."""
    table: dict[str, tuple[int, list[str]]] = {}
    for lineno, fields in read_table(path, None, ncols):
        image_id = fields[0]
        if image_id in table:
            raise WSOLDataError(
                f'{path}:{lineno}: id {image_id} repeated (first on line {table[image_id][0]})'
            )
        table[image_id] = (lineno, fields[1:])
    return table


def _image_size(path: str, image_id: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise FileNotFoundError(f'image {image_id!r} not found: {path}') from None
    except (OSError, ValueError, SyntaxError) as err:
        raise OSError(f'cannot read image {image_id!r} at {path}: corrupt or not an image ({err})') from err


def load_cub_records(
    root: str | os.PathLike, split: str, gt_box_mode: str = 'all'
) -> tuple[list[WSOLRecord], list[str] | None]:
    """Parse and check one split; returns ``(records, class_names or None without classes.txt)``.

    Every image of the split is opened once (header only) to get the size its box is checked against
    and scaled from, as wsolevaluation's ``image_sizes.txt`` records it.
    """
    check_choice(split, CUB_SPLITS, 'CUB split')
    check_choice(gt_box_mode, GT_BOX_MODES, 'gt_box_mode')
    base = _find_cub_root(os.fspath(root))
    files = {name: require_file(os.path.join(base, name), f'CUB-200-2011 {name}') for name in _REQUIRED}
    paths = _read_id_map(files['images.txt'], 2)
    labels = _read_id_map(files['image_class_labels.txt'], 2)
    splits = _read_id_map(files['train_test_split.txt'], 2)
    boxes = _read_id_map(files['bounding_boxes.txt'], 5)

    classes_file = os.path.join(base, 'classes.txt')
    class_names: dict[int, str] = {}
    if os.path.isfile(classes_file):
        for lineno, fields in read_table(classes_file, None, 2):
            class_names[parse_number(fields[0], int, classes_file, lineno, 'class id')] = fields[1]

    want = 1 if split == 'train' else 0
    records = []
    for image_id, (path_line, (rel_path,)) in paths.items():
        if image_id not in splits:
            raise WSOLDataError(
                f'image id {image_id} ({rel_path}) has no entry in {files["train_test_split.txt"]}'
            )
        split_line, (flag,) = splits[image_id]
        is_train = parse_number(flag, int, files['train_test_split.txt'], split_line, 'is_training flag')
        if is_train not in (0, 1):
            raise WSOLDataError(
                f'{files["train_test_split.txt"]}:{split_line}: is_training flag must be 0 or 1'
            )
        if is_train != want:
            continue
        if image_id not in labels:
            raise WSOLDataError(
                f'image id {image_id} ({rel_path}) has no label in {files["image_class_labels.txt"]}'
            )
        label_line, (label_text,) = labels[image_id]
        label = parse_number(label_text, int, files['image_class_labels.txt'], label_line, 'class label') - 1
        if label < 0 or (class_names and label + 1 not in class_names):
            raise WSOLDataError(
                f'{files["image_class_labels.txt"]}:{label_line}: class {label + 1} of image id {image_id} is not a '
                f'valid 1-based class id' + (f' of {classes_file}' if class_names else '')
            )
        if image_id not in boxes:
            raise WSOLDataError(
                f'image id {image_id} ({rel_path}) has no box in {files["bounding_boxes.txt"]}'
            )
        box_line, box_fields = boxes[image_id]
        x, y, w, h = (
            parse_number(v, float, files['bounding_boxes.txt'], box_line, 'box value') for v in box_fields
        )
        box = (x, y, x + w, y + h)
        path = join_inside(
            os.path.join(base, 'images'), rel_path, f'{files["images.txt"]}:{path_line}', 'image path'
        )
        size = _image_size(path, rel_path)
        check_box(box, size, rel_path, f'{files["bounding_boxes.txt"]}:{box_line}')
        records.append(WSOLRecord(image_id=rel_path, path=path, label=label, size=size, boxes=(box,)))
    if not records:
        raise WSOLDataError(f'CUB split {split!r} is empty in {files["train_test_split.txt"]}')
    names = [class_names[k] for k in sorted(class_names)] if class_names else None
    # CUB has exactly one box per image, so gt_box_mode 'all' and 'first' agree.
    return records, names


class CUBDataset(WSOLDataset):
    """CUB-200-2011, official layout; see the module docstring for the box convention.

    ``split`` is ``'train'`` or ``'test'``; other arguments as :class:`WSOLDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = 'test',
        is_training: bool = False,
        gt_box_mode: str = 'all',
        **kwargs,
    ) -> None:
        records, classes = load_cub_records(root, split, gt_box_mode)
        kwargs.setdefault('classes', classes)
        super().__init__(records, is_training=is_training, **kwargs)
        self.root = os.fspath(root)
        self.split = split
