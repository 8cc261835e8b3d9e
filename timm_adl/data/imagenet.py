"""ImageNet (ILSVRC) boxes from the official PASCAL-VOC-style XML files, one per image.

Layouts found without arguments (``split`` is usually ``'val'``):

- images: ``<root>/<split>/``, ``<root>/Data/CLS-LOC/<split>/`` or ``<root>/ILSVRC/Data/CLS-LOC/<split>/``,
  either flat (``ILSVRC2012_val_00000001.JPEG``) or in synset folders (``n01751748/...JPEG``, timm's
  folder layout);
- XML: ``<root>/Annotations/CLS-LOC/<split>/``, ``<root>/ILSVRC/Annotations/CLS-LOC/<split>/``,
  ``<root>/bbox/<split>/``, ``<root>/<split>_bbox/`` or next to the images (the ``ILSVRC2012_bbox_val``
  archive unpacks to a flat ``val/`` of XML files), matched to images by file stem.

Boxes are the XML's ``xmin ymin xmax ymax`` as given (wsolevaluation's ILSVRC ``localization.txt`` holds
the same numbers), scaled from the XML's ``<size>``. ``gt_box_mode='all'`` keeps every ``<object>``
(default, as wsolevaluation), ``'first'`` only the first (the convention of some older WSOL code).

Labels index a synset list: ``synset_mapping`` if given, else ``<root>/LOC_synset_mapping.txt``, else the
sorted synset folders of ``<root>/train/`` or of the image folder, else timm's ImageNet-1k synset order
(the same sorted order). A mapping file has one synset per line, optionally followed by a description.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from timm.data import ImageNetInfo

from .dataset import WSOLDataset
from .records import (
    GT_BOX_MODES,
    WSOLDataError,
    WSOLRecord,
    check_box,
    check_choice,
    read_lines,
    require_file,
    select_boxes,
)

__all__ = ['IMAGE_EXTENSIONS', 'ImageNetBoxDataset', 'load_imagenet_records', 'parse_voc_xml', 'read_synsets']

IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')


def _first_dir(candidates: list[str], what: str) -> str:
    for path in candidates:
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(f'{what} not found; looked in: {", ".join(candidates)}')


def read_synsets(path: str) -> list[str]:
    """Synsets in class-index order from ``LOC_synset_mapping.txt`` (``n01440764 tench, ...``) or a list."""
    require_file(path, 'synset mapping')
    synsets: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        synset = line.split()[0]
        if synset in seen:
            raise WSOLDataError(f'{path}:{lineno}: synset {synset} repeated (first on line {seen[synset]})')
        seen[synset] = lineno
        synsets.append(synset)
    if not synsets:
        raise WSOLDataError(f'synset mapping {path} is empty')
    return synsets


def _subdirs(path: str) -> list[str]:
    if not os.path.isdir(path):
        return []
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def _resolve_synsets(root: str, image_dir: str, synset_mapping: str | None) -> tuple[list[str], str]:
    """``(synsets, where they came from)`` in the order of the module docstring."""
    if synset_mapping is not None:
        return read_synsets(os.fspath(synset_mapping)), os.fspath(synset_mapping)
    mapping = os.path.join(root, 'LOC_synset_mapping.txt')
    if os.path.isfile(mapping):
        return read_synsets(mapping), mapping
    for folder in (os.path.join(root, 'train'), image_dir):
        names = _subdirs(folder)
        if names:
            return names, f'the synset folders of {folder}'
    return list(ImageNetInfo().label_names()), "timm's ImageNet-1k synset list"


def parse_voc_xml(path: str) -> tuple[tuple[int, int], list[tuple[str, tuple[float, float, float, float]]]]:
    """Return ``((width, height), [(synset, (xmin, ymin, xmax, ymax)), ...])`` from one annotation file."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise WSOLDataError(f'{path}: not a valid XML annotation ({err})') from None

    def number(node: ET.Element, tag: str, kind: type, where: str) -> int | float:
        text = node.findtext(tag)
        try:
            return kind(text.strip())
        except (AttributeError, ValueError):
            raise WSOLDataError(f'{path}: {where}<{tag}> must be a number, got {text!r}') from None

    annotation = tree.getroot()
    size_node = annotation.find('size')
    if size_node is None:
        raise WSOLDataError(f'{path}: no <size> element (the image size the boxes refer to)')
    size = (
        int(number(size_node, 'width', float, '<size>')),
        int(number(size_node, 'height', float, '<size>')),
    )
    if min(size) < 1:
        raise WSOLDataError(f'{path}: <size> must be positive, got {size}')
    objects = []
    for i, obj in enumerate(annotation.iter('object')):
        name = (obj.findtext('name') or '').strip()
        where = f'<object> #{i + 1} '
        box_node = obj.find('bndbox')
        if not name or box_node is None:
            raise WSOLDataError(f'{path}: {where}needs <name> and <bndbox>')
        box = tuple(
            number(box_node, tag, float, where + '<bndbox>') for tag in ('xmin', 'ymin', 'xmax', 'ymax')
        )
        objects.append((name, box))
    return size, objects


def _list_images(image_dir: str) -> list[str]:
    """Image ids (paths relative to ``image_dir``), flat or one synset folder deep, sorted."""
    ids = []
    for entry in os.scandir(image_dir):
        if entry.is_dir():
            ids.extend(
                f'{entry.name}/{sub.name}'
                for sub in os.scandir(entry.path)
                if sub.is_file() and sub.name.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
            ids.append(entry.name)
    if not ids:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {image_dir}')
    return sorted(ids)


def _index_xml(ann_dir: str) -> dict[str, str]:
    index: dict[str, str] = {}
    for folder, _, files in os.walk(ann_dir):
        for name in files:
            if name.lower().endswith('.xml'):
                stem = name[:-4]
                path = os.path.join(folder, name)
                if stem in index:
                    raise WSOLDataError(f'two annotation files for image {stem!r}: {index[stem]} and {path}')
                index[stem] = path
    return index


def load_imagenet_records(
    root: str | os.PathLike,
    split: str = 'val',
    image_dir: str | os.PathLike | None = None,
    ann_dir: str | os.PathLike | None = None,
    synset_mapping: str | os.PathLike | None = None,
    gt_box_mode: str = 'all',
    localization: bool = True,
) -> tuple[list[WSOLRecord], list[str]]:
    """Parse and check one split; returns ``(records, synsets)``.

    Every image needs an XML file (it holds the label of a flat image); XML files without an image are
    ignored, so a subset of the images can be evaluated. With ``localization=False`` (training) images
    in synset folders need no XML.
    """
    check_choice(gt_box_mode, GT_BOX_MODES, 'gt_box_mode')
    root = os.fspath(root)
    if image_dir is None:
        image_dir = _first_dir(
            [
                os.path.join(root, *parts, split)
                for parts in ((), ('Data', 'CLS-LOC'), ('ILSVRC', 'Data', 'CLS-LOC'))
            ],
            f'ImageNet {split!r} image folder',
        )
    image_ids = _list_images(image_dir)
    synsets, synset_source = _resolve_synsets(root, image_dir, synset_mapping)
    label_of = {s: i for i, s in enumerate(synsets)}

    needs_xml = localization or any('/' not in i for i in image_ids)
    xml_index: dict[str, str] = {}
    if needs_xml:
        if ann_dir is None:
            candidates = [
                os.path.join(root, 'Annotations', 'CLS-LOC', split),
                os.path.join(root, 'ILSVRC', 'Annotations', 'CLS-LOC', split),
                os.path.join(root, 'bbox', split),
                os.path.join(root, f'{split}_bbox'),
            ]
            ann_dir = next((c for c in candidates if os.path.isdir(c)), image_dir)
        xml_index = _index_xml(_first_dir([os.fspath(ann_dir)], 'ImageNet annotation folder'))

    records = []
    for image_id in image_ids:
        path = os.path.join(image_dir, image_id)
        folder_synset = image_id.split('/')[0] if '/' in image_id else None
        stem = os.path.splitext(os.path.basename(image_id))[0]
        xml_path = xml_index.get(stem)
        if xml_path is None and (localization or folder_synset is None):
            raise WSOLDataError(
                f'image {image_id!r} ({path}) has no annotation file {stem}.xml under {ann_dir}'
            )
        size, objects = parse_voc_xml(xml_path) if xml_path else (None, [])
        if xml_path and not objects:
            raise WSOLDataError(f'{xml_path}: no <object>, so image {image_id!r} has no label or box')
        synset = folder_synset or objects[0][0]
        if synset not in label_of:
            where = f'folder of {path}' if folder_synset else xml_path
            raise WSOLDataError(
                f'synset {synset!r} of image {image_id!r} ({where}) is not in {synset_source}'
            )
        if folder_synset and objects and objects[0][0] != folder_synset:
            raise WSOLDataError(
                f'{xml_path}: first object is {objects[0][0]!r} but image {image_id!r} is in folder {folder_synset!r}'
            )
        for _, box in objects:
            check_box(box, size, image_id, xml_path)
        boxes = select_boxes([box for _, box in objects], gt_box_mode)
        records.append(
            WSOLRecord(image_id=image_id, path=path, label=label_of[synset], size=size, boxes=boxes)
        )
    return records, synsets


class ImageNetBoxDataset(WSOLDataset):
    """ImageNet images with boxes from XML annotations (see the module docstring for the layouts).

    ``classes`` holds the synsets. Extra keyword arguments go to :class:`WSOLDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = 'val',
        is_training: bool = False,
        image_dir: str | os.PathLike | None = None,
        ann_dir: str | os.PathLike | None = None,
        synset_mapping: str | os.PathLike | None = None,
        gt_box_mode: str = 'all',
        **kwargs,
    ) -> None:
        records, synsets = load_imagenet_records(
            root,
            split,
            image_dir=image_dir,
            ann_dir=ann_dir,
            synset_mapping=synset_mapping,
            gt_box_mode=gt_box_mode,
            localization=not is_training,
        )
        kwargs.setdefault('classes', synsets)
        super().__init__(records, is_training=is_training, **kwargs)
        self.root = os.fspath(root)
        self.split = split
