"""ImageNet-1k (ILSVRC2012) from the user's own copy, in wsolevaluation's ``metadata/ILSVRC`` layout.

ImageNet cannot be downloaded without an account, so this takes what the user has: the official archives
(``ILSVRC2012_img_train.tar`` of per-synset tars, ``ILSVRC2012_img_val.tar``, the validation boxes
``ILSVRC2012_bbox_val_v3.tgz``) or their unpacked folders. Result under ``DIR``::

    DIR/ILSVRC/train/<synset>/*.JPEG   unpacked, or a symbolic link to the user's folder
    DIR/ILSVRC/val/*.JPEG              the 50,000 validation images (likewise)
    DIR/ILSVRC/val2/...                ImageNetV2 (wsolevaluation's train-fullsup images), if given
    DIR/ILSVRC/metadata/{train,test,val}/

Splits as wsolevaluation's: ``train`` = the training images (labels only), ``test`` = the official
validation images with their XML boxes (every ``<object>``), ``val`` = wsolevaluation's ImageNetV2 files
when given; without them there is no ``val`` split (train with ``data.val_split=null``), since no other
images of ImageNet have boxes for every image. Labels index the sorted synsets (timm's class order).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .download import DownloadError, extract_archive
from .imagenet import IMAGE_EXTENSIONS, load_imagenet_records
from .metadata_write import PreparedDataset, write_wsol_metadata
from .records import WSOLDataError, WSOLRecord

__all__ = ['prepare_imagenet']

VAL_FILES = ('image_ids.txt', 'class_labels.txt', 'image_sizes.txt', 'localization.txt')


def _place(source: Path, dest: Path, unpack=extract_archive) -> Path:
    """``dest`` from a folder (linked, not copied: ImageNet is large) or an archive (unpacked whole)."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        os.symlink(source.resolve(), dest, target_is_directory=True)
        return dest
    if not source.is_file():
        raise FileNotFoundError(f'not found: {source}')
    return unpack(source, dest)


def _extract_train(archive: Path, dest: Path) -> Path:
    """The training archive holds one tar per synset: unpack each into its synset folder."""
    tmp = Path(tempfile.mkdtemp(prefix='.train.extract-', dir=dest.parent))
    try:
        outer = extract_archive(archive, tmp / 'outer')
        staged = tmp / 'train'
        staged.mkdir()
        for inner in sorted(outer.glob('*.tar')):
            extract_archive(inner, staged / inner.stem)
            inner.unlink()  # 140 GB: do not hold two copies
        if not any(staged.iterdir()):
            raise DownloadError(f'{archive} holds no per-synset .tar files (is it ILSVRC2012_img_train.tar?)')
        os.replace(staged, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _train_records(train_dir: Path) -> list[WSOLRecord]:
    synsets = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not synsets:
        raise WSOLDataError(f'no synset folders in {train_dir}')
    records = []
    for label, synset in enumerate(synsets):
        names = sorted(
            e.name for e in os.scandir(train_dir / synset) if e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        records.extend(
            WSOLRecord(image_id=f'train/{synset}/{n}', path=str(train_dir / synset / n), label=label)
            for n in names
        )
    return records


def _boxes_dir(val_boxes: Path, root: Path) -> Path:
    if val_boxes.is_dir():
        return val_boxes
    return _place(val_boxes, root / 'val_boxes')


def prepare_imagenet(
    dest: str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    val_boxes: str | os.PathLike,
    imagenetv2: str | os.PathLike | None = None,
    imagenetv2_metadata: str | os.PathLike | None = None,
) -> PreparedDataset:
    """Place (unpack or link) the user's ImageNet copy under ``dest/ILSVRC`` and write its metadata."""
    if (imagenetv2 is None) != (imagenetv2_metadata is None):
        raise ValueError('ImageNetV2 needs both its images (imagenetv2) and wsolevaluation metadata/ILSVRC')
    root = Path(dest) / 'ILSVRC'
    train_dir = _place(Path(train), root / 'train', unpack=_extract_train)
    val_dir = _place(Path(val), root / 'val')
    boxes = _boxes_dir(Path(val_boxes), root)
    train_records = _train_records(train_dir)
    test, _ = load_imagenet_records(root, 'val', image_dir=val_dir, ann_dir=boxes)
    test = [WSOLRecord(f'val/{r.image_id}', r.path, r.label, r.size, r.boxes) for r in test]
    info: dict[str, object] = {'dataset': 'ImageNet-1k', 'train': str(train), 'test': f'{val} + {val_boxes}'}
    copies = {}
    val_source = 'none (give --imagenetv2 and --imagenetv2-metadata, or train with data.val_split=null)'
    if imagenetv2 is not None:
        meta = Path(imagenetv2_metadata)
        val_meta = next((d for d in (meta / 'val', meta) if (d / 'image_ids.txt').is_file()), None)
        if val_meta is None:
            raise FileNotFoundError(
                f'no image_ids.txt in {meta / "val"} or {meta} (wsolevaluation metadata/ILSVRC)'
            )
        _place(Path(imagenetv2), root / 'val2', unpack=_unpack_v2)
        copies = {f'val/{name}': val_meta / name for name in VAL_FILES}
        val_source = f'wsolevaluation ImageNetV2 (train-fullsup): {imagenetv2}, metadata {val_meta}'
    info['val'] = val_source
    metadata_root = write_wsol_metadata(
        root / 'metadata', {'train': train_records, 'test': test}, info, copies
    )
    sizes = {'train': len(train_records), 'test': len(test)}
    if copies:
        ids = (metadata_root / 'val' / 'image_ids.txt').read_text().split()
        missing = [i for i in ids if not (root / i).is_file()]
        if missing:
            raise WSOLDataError(
                f'{len(missing)} ImageNetV2 image(s) listed in the metadata are missing, e.g. {root / missing[0]}'
            )
        sizes['val'] = len(ids)
    return PreparedDataset('ImageNet-1k', root, metadata_root, sizes, val_source)


def _unpack_v2(source: Path, dest: Path) -> Path:
    """ImageNetV2's archive has one top folder (``imagenetv2-threshold0.7``) that becomes ``val2``."""
    with tarfile.open(source) as tar:
        tops = {m.name.split('/')[0] for m in tar.getmembers()}
    return extract_archive(source, dest, top=tops.pop() if len(tops) == 1 else None)
