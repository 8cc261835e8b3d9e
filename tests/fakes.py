"""Tiny fake data sets on disk, in each format ``timm_adl.data`` reads, for tests (importable helper).

Each ``make_fake_*`` writes a few small images (sizes differ, so box scaling is exercised) and the
annotation files of its format under ``root``, and returns what a correct loader must report, so tests
compare against values computed here from first principles rather than by the code under test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ['make_fake_cub', 'make_fake_imagenet', 'make_fake_wsol_metadata', 'write_image']

# (width, height) of the fake images, cycled: landscape, portrait, square, odd.
SIZES = ((40, 30), (24, 36), (32, 32), (45, 27))


def write_image(path: str | os.PathLike, size: tuple[int, int], seed: int = 0) -> None:
    """Write a small random RGB image (JPEG or PNG by extension), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')


def _box_in(size: tuple[int, int], i: int) -> tuple[int, int, int, int]:
    """An integer box ``(x, y, w, h)`` well inside a ``size`` image, different per ``i``."""
    w, h = size
    x, y = 1 + i % 3, 2 + i % 2
    return x, y, w // 2 + i % 4, h // 2 + i % 3


def make_fake_cub(
    root: str | os.PathLike, n_classes: int = 2, per_class: int = 3, classes_txt: bool = True
) -> dict:
    """CUB-200-2011's official layout under ``root/CUB_200_2011``.

    Returns ``{'base': Path, 'images': [{'id', 'index', 'path', 'label', 'split', 'size', 'box_xywh'}]}``
    where ``label`` is 0-based and ``split`` alternates train/test within each class.
    """
    base = Path(root) / 'CUB_200_2011'
    images, lines = [], {'images': [], 'labels': [], 'split': [], 'boxes': [], 'classes': []}
    index = 0
    for c in range(n_classes):
        folder = f'{c + 1:03d}.Bird_{c}'
        lines['classes'].append(f'{c + 1} {folder}')
        for k in range(per_class):
            index += 1
            rel = f'{folder}/Bird_{c}_{k:04d}.jpg'
            size = SIZES[index % len(SIZES)]
            write_image(base / 'images' / rel, size, seed=index)
            box = _box_in(size, index)
            split = 'train' if k % 2 == 0 else 'test'
            lines['images'].append(f'{index} {rel}')
            lines['labels'].append(f'{index} {c + 1}')
            lines['split'].append(f'{index} {1 if split == "train" else 0}')
            lines['boxes'].append(f'{index} ' + ' '.join(f'{v:.1f}' for v in box))
            images.append(
                dict(
                    id=rel,
                    index=index,
                    path=base / 'images' / rel,
                    label=c,
                    split=split,
                    size=size,
                    box_xywh=box,
                )
            )
    _write_lines(base / 'images.txt', lines['images'])
    _write_lines(base / 'image_class_labels.txt', lines['labels'])
    _write_lines(base / 'train_test_split.txt', lines['split'])
    _write_lines(base / 'bounding_boxes.txt', lines['boxes'])
    if classes_txt:
        _write_lines(base / 'classes.txt', lines['classes'])
    return {'base': base, 'images': images}


def _rect_mask(path: Path, size: tuple[int, int], rect: tuple[int, int, int, int]) -> None:
    """A 0/255 grey PNG with ``rect = (x0, y0, x1, y1)`` (exclusive end) set."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    x0, y0, x1, y1 = rect
    mask[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


def make_fake_wsol_metadata(
    root: str | os.PathLike,
    kind: str = 'boxes',
    splits: Sequence[str] = ('train', 'val', 'test'),
    n_classes: int = 2,
    per_class: int = 3,
    mask_size: tuple[int, int] = (32, 32),
) -> dict:
    """wsolevaluation's layout: images ``root/<split>/<class>/<n>.jpg``, files ``root/metadata/<split>/``.

    ``kind='boxes'``: the first image of each class has two boxes; ``'masks'``: every image has one or two
    instance masks (rectangles) and an ignore mask, all ``mask_size`` PNGs under ``root/masks/`` (paths in
    ``localization.txt`` relative to ``root/masks``), the second instance listed with an empty ignore
    field as in the reference's OpenImages files. The ``'train'`` split gets empty ``image_sizes.txt`` and
    ``localization.txt``, as in the reference. Returns ``{split: [{'id', 'label', 'size', 'boxes',
    'masks', 'ignore'}]}`` (boxes inclusive x0 y0 x1 y1; mask rects as in :func:`_rect_mask`).
    """
    root = Path(root)
    out: dict[str, list] = {}
    n = 0
    for split in splits:
        items, ids, labels, sizes, loc = [], [], [], [], []
        for c in range(n_classes):
            for k in range(per_class):
                n += 1
                image_id = f'{split}/c{c}/{k}.jpg'
                size = SIZES[n % len(SIZES)]
                if kind == 'masks':
                    size = mask_size
                write_image(root / image_id, size, seed=n)
                x, y, w, h = _box_in(size, n)
                boxes = [(x, y, x + w, y + h)]
                if k == 0:
                    boxes.append((0, 0, size[0] - 1, size[1] - 1))
                item = dict(id=image_id, label=c, size=size, boxes=boxes, masks=[], ignore=None)
                ids.append(image_id)
                labels.append(f'{image_id},{c}')
                if split != 'train':
                    sizes.append(f'{image_id},{size[0]},{size[1]}')
                    if kind == 'boxes':
                        loc.extend(f'{image_id},{b[0]},{b[1]},{b[2]},{b[3]}' for b in boxes)
                    else:
                        stem = f'{split}/c{c}/{k}'
                        rects = [(2, 2, 12, 10)] + ([(20, 16, 30, 30)] if k == 0 else [])
                        ignore = (0, 0, 16, 20)
                        for j, rect in enumerate(rects):
                            _rect_mask(root / 'masks' / f'{stem}_m{j}.png', mask_size, rect)
                        _rect_mask(root / 'masks' / f'{stem}_ignore.png', mask_size, ignore)
                        loc.append(f'{image_id},{stem}_m0.png,{stem}_ignore.png')
                        loc.extend(f'{image_id},{stem}_m{j}.png,' for j in range(1, len(rects)))
                        item.update(masks=rects, ignore=ignore)
                items.append(item)
        meta = root / 'metadata' / split
        _write_lines(meta / 'image_ids.txt', ids)
        _write_lines(meta / 'class_labels.txt', labels)
        _write_lines(meta / 'image_sizes.txt', sizes if kind == 'boxes' else [])
        _write_lines(meta / 'localization.txt', loc)
        out[split] = items
    return out


def _voc_xml(
    stem: str, size: tuple[int, int], objects: Sequence[tuple[str, tuple[int, int, int, int]]]
) -> str:
    objs = ''.join(
        f'<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>'
        f'<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>'
        for name, b in objects
    )
    return (
        f'<annotation><folder>val</folder><filename>{stem}</filename><source><database>ILSVRC_2012</database>'
        f'</source><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>'
        f'<segmented>0</segmented>{objs}</annotation>'
    )


def make_fake_imagenet(
    root: str | os.PathLike,
    synsets: Sequence[str] = ('n01440764', 'n01443537', 'n01484850'),
    per_class: int = 2,
    layout: str = 'flat',
    ann_layout: str = 'kaggle',
    mapping: bool = True,
) -> dict:
    """ImageNet val images with one XML each (the first image of each class has two objects).

    ``layout='flat'`` (``root/val/ILSVRC2012_val_*.JPEG``) or ``'synset'`` (``root/val/<synset>/...``);
    ``ann_layout='kaggle'`` (``root/Annotations/CLS-LOC/val/*.xml``) or ``'beside'`` (next to the images).
    ``mapping`` writes ``root/LOC_synset_mapping.txt`` with the synsets in the order given (their label
    order). Returns ``{'images': [{'id', 'label', 'synset', 'size', 'boxes', 'xml'}]}``, sorted by id.
    """
    root = Path(root)
    images = []
    n = 0
    for label, synset in enumerate(synsets):
        for k in range(per_class):
            n += 1
            stem = f'ILSVRC2012_val_{n:08d}'
            image_id = f'{stem}.JPEG' if layout == 'flat' else f'{synset}/{stem}.JPEG'
            size = SIZES[n % len(SIZES)]
            write_image(root / 'val' / image_id, size, seed=n)
            x, y, w, h = _box_in(size, n)
            boxes = [(x, y, x + w, y + h)] + ([(0, 1, size[0] - 2, size[1] - 1)] if k == 0 else [])
            xml_dir = root / 'Annotations' / 'CLS-LOC' / 'val' if ann_layout == 'kaggle' else root / 'val'
            xml = xml_dir / f'{stem}.xml'
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(_voc_xml(stem, size, [(synset, b) for b in boxes]), encoding='utf-8')
            images.append(dict(id=image_id, label=label, synset=synset, size=size, boxes=boxes, xml=xml))
    if mapping:
        _write_lines(root / 'LOC_synset_mapping.txt', [f'{s} fake class {i}' for i, s in enumerate(synsets)])
    return {'images': sorted(images, key=lambda d: d['id'])}


def box_outline(box, width: int = 2) -> set[tuple[int, int]]:
    """Pixels (y, x) of a ``width``-px outline drawn inside an inclusive box: where viz draws a box."""
    x0, y0, x1, y1 = (int(v) for v in box)
    pts = set()
    for t in range(width):
        for x in range(x0, x1 + 1):
            pts |= {(y0 + t, x), (y1 - t, x)}
        for y in range(y0, y1 + 1):
            pts |= {(y, x0 + t), (y, x1 - t)}
    return pts


def has_swatch(picture: np.ndarray, color: tuple[int, int, int], side: int = 8) -> bool:
    """Whether ``picture`` holds a solid ``side`` x ``side`` square of ``color``: a legend swatch (a box
    outline is at most a few px wide, so it never makes one)."""
    hit = np.pad((picture == color).all(-1).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    area = hit[side:, side:] - hit[:-side, side:] - hit[side:, :-side] + hit[:-side, :-side]
    return bool((area == side * side).any())


# A resnet10t small enough for CPU training tests: every trainer test builds its recipe from this.
TINY_MODEL = dict(model='resnet10t', model_kwargs=dict(channels=[8, 16, 32, 64], stem_width=8))


def tiny_recipe(root: str | os.PathLike, out: str | os.PathLike, **over) -> dict:
    """A 2-epoch, 32-px training recipe of ``TINY_MODEL`` on a fake wsol-metadata tree; ``over`` replaces keys."""
    recipe = dict(
        **TINY_MODEL,
        data=dict(name='wsol-metadata', root=str(root)),
        img_size=32,
        batch_size=4,
        epochs=2,
        num_workers=0,
        optim=dict(lr=0.05),
        output_dir=str(out),
    )
    recipe.update(over)
    return recipe
