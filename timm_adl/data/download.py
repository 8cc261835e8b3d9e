"""Fetch and unpack data set archives: resumable HTTP download, checksum, safe whole-or-nothing extraction.

Why each step is careful:

- A download goes to ``<file>.part`` and continues from its length with an HTTP ``Range`` request, so an
  interrupted 1.1 GB CUB download is not restarted; the file gets its final name only after its checksum
  matched, so a file under the final name is always whole.
- A checksum mismatch deletes the ``.part`` (resuming onto corrupt bytes can never succeed) and says so.
- Extraction accepts only regular files and folders with relative paths inside the destination (no
  absolute paths, ``..``, links or devices), unpacks into a temporary folder beside the destination and
  renames it into place at the end: an interrupted or refused extraction leaves no half-extracted tree.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

__all__ = ['DownloadError', 'download_file', 'extract_archive', 'file_digest', 'unpack_into']

CHUNK = 1 << 20


class DownloadError(OSError):
    """A download or an archive that cannot be used; the message says which file and why."""


def file_digest(path: str | os.PathLike, algorithm: str = 'md5') -> str:
    """Hex digest of a file, read in chunks (archives are larger than memory allows reading whole)."""
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit='B',
        unit_scale=True,
        unit_divisor=1024,
        disable=None if enabled else True,
        dynamic_ncols=True,
    )


def _open(url: str, start: int, timeout: float):
    """The response for ``url`` from byte ``start`` on, and whether the server honoured the range."""
    request = urllib.request.Request(url, headers={'User-Agent': 'timm-adl'})
    if start:
        request.add_header('Range', f'bytes={start}-')
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # http(s) only: checked by download_file
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # range past the end: the .part is already complete
            return None, True
        raise DownloadError(f'cannot download {url}: HTTP {err.code} {err.reason}') from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f'cannot download {url}: {getattr(err, "reason", err)}') from None
    return response, response.status == 206


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check ``md5``, return ``dest``.

    A ``dest`` that already exists with the right checksum is kept without a request. Raises
    :class:`DownloadError` with one line for a network error, an interrupted transfer (the ``.part`` is kept,
    so running again resumes it) or a checksum mismatch (the ``.part`` is deleted).
    """
    if not url.startswith(('http://', 'https://')):
        raise DownloadError(f'download URL must start with http:// or https://, got {url!r}')
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_digest(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    start = part.stat().st_size if part.is_file() else 0
    response, ranged = _open(url, start, timeout)
    if response is not None:
        if start and not ranged:  # the server ignored the range: start over
            start = 0
        length = response.headers.get('Content-Length')
        total = start + int(length) if length is not None else None
        received = start
        with response, open(part, 'ab' if start else 'wb') as out:
            bar = _progress_bar(total, start, dest.name, progress)
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, ValueError, http.client.HTTPException) as err:  # reset, timeout, truncated
                raise DownloadError(
                    f'download of {url} interrupted at {received} bytes ({err}); run again to resume {part}'
                ) from None
            finally:
                bar.close()
        if total is not None and received < total:
            raise DownloadError(
                f'download of {url} interrupted at {received} of {total} bytes; run again to resume {part}'
            )
    if md5 is not None:
        got = file_digest(part)
        if got != md5:
            part.unlink()
            raise DownloadError(
                f'checksum mismatch for {url}: md5 {got}, expected {md5}; the partial file was deleted, '
                'run again to download it afresh'
            )
    os.replace(part, dest)
    return dest


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace('\\', '/'))
    if path.is_absolute() or '..' in path.parts or (path.parts and ':' in path.parts[0]):
        raise DownloadError(f'{archive}: refusing member {name!r} (its path leaves the extraction folder)')
    return path


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            _safe_member_path(m.name, archive)
            if not (m.isfile() or m.isdir()):
                raise DownloadError(
                    f'{archive}: refusing member {m.name!r} (only regular files and folders are extracted)'
                )
        kwargs: dict = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
        tar.extractall(target, members=members, **kwargs)


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _safe_member_path(info.filename, archive)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link
                raise DownloadError(f'{archive}: refusing member {info.filename!r} (a symbolic link)')
        zf.extractall(target)


def _extractor(archive: Path) -> Callable[[Path, Path], None]:
    if zipfile.is_zipfile(archive):
        return _extract_zip
    if tarfile.is_tarfile(archive):
        return _extract_tar
    raise DownloadError(f'{archive} is neither a tar nor a zip archive')


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, top: str | None = None) -> Path:
    """Unpack ``archive`` so that ``dest`` appears whole or not at all; return ``dest``.

    ``top``: the archive's single top folder (``CUB_200_2011``) that becomes ``dest``; without it the
    archive's whole content becomes ``dest``. An existing ``dest`` is an error (never merged into).
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DownloadError(f'{dest} already exists: remove it to extract {archive.name} again')
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.extract-', dir=dest.parent))
    try:
        try:
            _extractor(archive)(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
            raise DownloadError(f'{archive} is damaged or incomplete ({err})') from None
        source = tmp / top if top else tmp
        if not source.is_dir():
            found = ', '.join(sorted(p.name for p in tmp.iterdir())) or 'nothing'
            raise DownloadError(f'{archive} has no top folder {top!r} (it holds: {found})')
        os.replace(source, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def unpack_into(source: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Add the files of ``source`` (an archive or a folder) to the folder ``dest``; return their paths.

    For archives that complete an existing tree (CUBV2's images go into CUB's class folders). Every file is
    staged first and nothing is moved if one would overwrite an existing file, so ``dest`` never holds
    half of the addition; moving the staged files is the one step that cannot be undone midway.
    """
    source, dest = Path(source), Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix='.unpack-', dir=dest.parent))
    try:
        staged = tmp / 'files'
        if source.is_dir():
            shutil.copytree(source, staged)
        else:
            extract_archive(source, staged)
        files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob('*') if p.is_file())
        clashes = [f for f in files if (dest / f).exists()]
        if clashes:
            raise DownloadError(f'{source}: {len(clashes)} file(s) already in {dest}, e.g. {clashes[0]}')
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged / rel, dest / rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files
