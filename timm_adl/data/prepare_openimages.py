"""OpenImages30k from clovaai/wsolevaluation's archives and metadata (the data set that paper made).

wsolevaluation distributes ``OpenImages_images.zip`` and ``OpenImages_annotations.zip`` (their
``dataset/prepare_openimages.sh`` unzips both into ``dataset/OpenImages``) and ships the split files in
its repository (``metadata/OpenImages/{train,val,test}``; ``val`` is the train-fullsup split, with masks).
This unpacks both archives into ``DIR/OpenImages`` (whole-or-nothing), copies the metadata, and loads
every split once, so a missing image or mask is reported now rather than in the first epoch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .download import extract_archive, unpack_into
from .metadata_write import PreparedDataset, replace_folder
from .wsol_metadata import load_wsol_metadata_records

__all__ = ['prepare_openimages']

SPLITS = ('train', 'val', 'test')


def _unpack_both(images: Path, annotations: Path, dest: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.extract-', dir=dest.parent))
    try:
        staged = tmp / dest.name
        if images.is_dir():
            shutil.copytree(images, staged)
        else:
            extract_archive(images, staged)
        unpack_into(annotations, staged)
        os.replace(staged, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _find_mask_root(root: Path, metadata: Path) -> Path:
    """The folder the metadata's mask paths are relative to: ``root`` or one folder below it."""
    with open(metadata / 'test' / 'localization.txt', encoding='utf-8') as f:
        first = f.readline().strip().split(',')
    if len(first) < 2:
        raise FileNotFoundError(f'{metadata / "test" / "localization.txt"} holds no mask line')
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (candidate / first[1]).is_file():
            return candidate
    raise FileNotFoundError(f'mask {first[1]} (first line of test/localization.txt) is not under {root}')


def prepare_openimages(
    dest: str | os.PathLike,
    images: str | os.PathLike,
    annotations: str | os.PathLike,
    metadata: str | os.PathLike,
) -> PreparedDataset:
    """Unpack wsolevaluation's OpenImages archives under ``dest/OpenImages`` and check its metadata."""
    root = Path(dest) / 'OpenImages'
    root.parent.mkdir(parents=True, exist_ok=True)
    metadata = Path(metadata)
    missing = [s for s in SPLITS if not (metadata / s / 'image_ids.txt').is_file()]
    if missing:
        raise FileNotFoundError(
            f'{metadata} is not wsolevaluation metadata/OpenImages: no {missing[0]}/image_ids.txt'
        )
    if not root.exists():
        _unpack_both(Path(images), Path(annotations), root)
    staged = Path(tempfile.mkdtemp(prefix='.metadata.new-', dir=root))
    try:
        for split in SPLITS:
            shutil.copytree(metadata / split, staged / split)
        mask_root = _find_mask_root(root, staged)
        sizes = {}
        for split in SPLITS:  # every image, mask and ignore file must exist
            records = load_wsol_metadata_records(
                root, split, metadata_root=staged, mask_root=mask_root, localization=split != 'train'
            )
            sizes[split] = len(records)
        replace_folder(staged, root / 'metadata')
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    val = f'wsolevaluation OpenImages30k val (train-fullsup): {metadata / "val"}'
    return PreparedDataset('OpenImages30k', root, root / 'metadata', sizes, val, mask_root)
