"""CUB-200-2011 for training and evaluation: download, verify, extract, write wsolevaluation metadata.

Result under ``DIR``::

    DIR/CUB_200_2011/            the official release, as extracted (images/, images.txt, ...)
    DIR/CUB_200_2011/metadata/   train/, val/, test/ in wsolevaluation's format, and prepare.json

Splits (image ids are the paths of ``images.txt``, as wsolevaluation's ``metadata/CUB``):

- ``test``: the official test split (5,794 images), boxes ``x, y, x + w, y + h`` (see :mod:`.cub`).
- ``val`` (the paper's train-fullsup): wsolevaluation's CUBV2 images (their ``CUBV2.tar`` unpacks into
  the class folders of ``images/``) with their ``metadata/CUB/val`` files, when the user gives both;
  otherwise ``val_per_class`` images of every class (default 5, i.e. 1,000, the size of CUBV2) drawn from
  the official ``train`` split with a fixed seed (:func:`carve_val_split`) and removed from ``train``.
  Never from ``test``. ``prepare.json`` records which, with the seed and the sizes.
- ``train``: the official training split (5,994 images), less the carved ``val`` images if any.
"""

from __future__ import annotations

import os
from pathlib import Path

from .cub import load_cub_records
from .download import DownloadError, download_file, extract_archive, file_digest, unpack_into
from .metadata_write import PreparedDataset, carve_val_split, write_wsol_metadata

__all__ = ['CUB_MD5', 'CUB_URL', 'prepare_cub']

# The official archive on CaltechDATA (record 65de6-vp158, "Caltech-UCSD Birds-200-2011"), the address the
# dataset page links to since the vision.caltech.edu host retired; the MD5 is the one torchvision-style
# CUB loaders check (e.g. avalanche's CUB200, TDeVries/cub2011_dataset): found with the search tool.
CUB_URL = 'https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz'
CUB_MD5 = '97eceeb196236b17998738112f37df78'
CUB_FOLDER = 'CUB_200_2011'
VAL_FILES = ('image_ids.txt', 'class_labels.txt', 'image_sizes.txt', 'localization.txt')


def _fetch_and_extract(dest: Path, url: str, md5: str | None, archive: Path | None, progress: bool) -> Path:
    base = dest / CUB_FOLDER
    if (base / 'images.txt').is_file():
        return base  # extracted by an earlier run (extraction is whole-or-nothing)
    if archive is None:
        archive = download_file(url, dest / 'CUB_200_2011.tgz', md5=md5, progress=progress)
    elif md5 is not None:
        got = file_digest(archive)
        if got != md5:
            raise DownloadError(f'checksum mismatch for {archive}: md5 {got}, expected {md5}')
    return extract_archive(archive, base, top=CUB_FOLDER)


def _cubv2_val_dir(metadata: Path) -> Path:
    """wsolevaluation's ``metadata/CUB`` or its ``val`` folder, whichever holds the four files."""
    for folder in (metadata / 'val', metadata):
        if all((folder / f).is_file() for f in VAL_FILES):
            return folder
    raise DownloadError(
        f'no wsolevaluation CUB val metadata ({", ".join(VAL_FILES)}) in {metadata} or {metadata / "val"}'
    )


def _add_cubv2(base: Path, cubv2: Path, cubv2_metadata: Path) -> Path:
    """Unpack the CUBV2 images into ``images/`` (once) and return the folder of their val metadata."""
    val_dir = _cubv2_val_dir(cubv2_metadata)
    ids = [line.strip() for line in (val_dir / 'image_ids.txt').read_text().splitlines() if line.strip()]
    missing = [i for i in ids if not (base / 'images' / i).is_file()]
    if missing:
        unpack_into(cubv2, base / 'images')
        missing = [i for i in ids if not (base / 'images' / i).is_file()]
    if missing:
        raise DownloadError(
            f'{len(missing)} train-fullsup image(s) of {val_dir / "image_ids.txt"} not found in {cubv2}, '
            f'e.g. {missing[0]}'
        )
    return val_dir


def prepare_cub(
    dest: str | os.PathLike,
    url: str = CUB_URL,
    md5: str | None = CUB_MD5,
    archive: str | os.PathLike | None = None,
    cubv2: str | os.PathLike | None = None,
    cubv2_metadata: str | os.PathLike | None = None,
    val_per_class: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> PreparedDataset:
    """Download (or take ``archive``), verify, extract CUB-200-2011 under ``dest`` and write its metadata.

    Args:
        url, md5: where the archive comes from and its checksum (``md5=None`` skips the check).
        archive: a local copy of ``CUB_200_2011.tgz`` instead of downloading (checked against ``md5``).
        cubv2, cubv2_metadata: wsolevaluation's ``CUBV2.tar`` (or its unpacked folder) and its
            ``metadata/CUB`` folder: the train-fullsup split. Both or neither.
        val_per_class, seed: the validation split carved from ``train`` without CUBV2 (module docstring).
    """
    if (cubv2 is None) != (cubv2_metadata is None):
        raise ValueError(
            'CUBV2 needs both its images (cubv2) and wsolevaluation metadata/CUB (cubv2_metadata)'
        )
    dest = Path(dest)
    base = _fetch_and_extract(dest, url, md5, Path(archive) if archive else None, progress)
    train, _ = load_cub_records(base, 'train')
    test, _ = load_cub_records(base, 'test')
    info: dict[str, object] = {'dataset': 'CUB-200-2011', 'source': str(archive or url), 'md5': md5}
    metadata_root = base / 'metadata'
    if cubv2 is not None:
        val_dir = _add_cubv2(base, Path(cubv2), Path(cubv2_metadata))
        info['val'] = f'wsolevaluation CUBV2 (train-fullsup): images {cubv2}, metadata {val_dir}'
        copies = {f'val/{name}': val_dir / name for name in VAL_FILES}
        write_wsol_metadata(metadata_root, {'train': train, 'test': test}, info, copies)
        sizes = {
            'train': len(train),
            'val': _count_lines(metadata_root / 'val' / 'image_ids.txt'),
            'test': len(test),
        }
    else:
        train, val = carve_val_split(train, val_per_class, seed)
        info['val'] = (
            f'carved from the official train split: {val_per_class} per class, numpy default_rng({seed})'
        )
        info.update(val_per_class=val_per_class, seed=seed)
        write_wsol_metadata(metadata_root, {'train': train, 'val': val, 'test': test}, info)
        sizes = {'train': len(train), 'val': len(val), 'test': len(test)}
    return PreparedDataset('CUB-200-2011', base / 'images', metadata_root, sizes, str(info['val']))


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())
