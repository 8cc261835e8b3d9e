"""What every WSOL data format parses into, and the checks they share.

Each format module (``cub``, ``wsol_metadata``, ``imagenet``) turns its files into a list of
:class:`WSOLRecord` at construction time, so every annotation problem surfaces before the first batch,
with the file and line (or id) that caused it, instead of as a ``KeyError`` halfway through an epoch.
"""

from __future__ import annotations

import codecs
import difflib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    'GT_BOX_MODES',
    'WSOLDataError',
    'WSOLRecord',
    'check_box',
    'check_choice',
    'choice_error',
    'join_inside',
    'parse_number',
    'read_lines',
    'read_table',
    'require_file',
    'select_boxes',
]

GT_BOX_MODES = ('all', 'first')

Box = tuple[float, float, float, float]


class WSOLDataError(ValueError):
    """A data set's files are inconsistent or malformed (the message names the file and line or id)."""


@dataclass(frozen=True)
class WSOLRecord:
    """One image of a WSOL split.

    ``boxes`` are in pixels of the image *on disk* (the inclusive ``x0 y0 x1 y1`` convention of the
    references); ``size`` is the ``(width, height)`` the boxes are scaled from (the annotation's, as the
    references use it, not re-read from the image). Mask paths are absolute; ``ignore_path`` may be None.
    """

    image_id: str
    path: str
    label: int
    size: tuple[int, int] | None = None
    boxes: tuple[Box, ...] = ()
    mask_paths: tuple[str, ...] = field(default=())
    ignore_path: str | None = None


def choice_error(value: str, valid: Sequence[str], what: str) -> ValueError:
    """The error for an unknown name: lists the valid ones, closest first when there is a near match."""
    close = difflib.get_close_matches(str(value), list(valid), n=3, cutoff=0.4)
    hint = f' (did you mean {", ".join(repr(c) for c in close)}?)' if close else ''
    return ValueError(f'unknown {what} {value!r}{hint}; expected one of {", ".join(map(repr, valid))}')


def check_choice(value: str, valid: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``valid``, else raise :func:`choice_error`."""
    if value not in valid:
        raise choice_error(value, valid, what)
    return value


def require_file(path: str | os.PathLike, what: str) -> str:
    """Return ``path`` as a string if it is a file, else raise ``FileNotFoundError`` naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    return path


def read_table(path: str, sep: str | None, ncols: int | Sequence[int]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each non-blank line, checking the field count.

    ``sep=None`` splits on whitespace (CUB); ``','`` keeps empty fields (wsolevaluation's mask lines end
    with an empty ignore path). Line numbers are 1-based so messages match an editor.
    """
    allowed = (ncols,) if isinstance(ncols, int) else tuple(ncols)
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        fields = line.strip().split() if sep is None else line.split(sep)
        if len(fields) not in allowed:
            want = ' or '.join(str(n) for n in allowed)
            raise WSOLDataError(
                f'{path}:{lineno}: expected {want} fields separated by {sep or "whitespace"!r}, '
                f'got {len(fields)}: {line!r}'
            )
        yield lineno, fields


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file, line ends removed.

    A UTF-8 byte-order mark (Windows editors write one) is dropped rather than glued to the first image
    id; any other encoding (UTF-16, Latin-1) is refused with the file and line, not a bare
    ``UnicodeDecodeError``.
    """
    with open(path, 'rb') as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise WSOLDataError(f'{path}:1: the file is UTF-16 text; save it as UTF-8')
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError as err:
                raise WSOLDataError(
                    f'{path}:{lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1}); '
                    'save the file as UTF-8'
                ) from None
            yield lineno, line.rstrip('\r\n')


def join_inside(root: str, rel: str, where: str, what: str = 'image id') -> str:
    """``root/rel``, refusing a ``rel`` that is absolute or climbs out with ``..``: an annotation file
    must not make the loader read files outside the data root."""
    parts = rel.replace('\\', '/').split('/')
    if os.path.isabs(rel) or rel.startswith(('/', '\\')) or '..' in parts or os.path.splitdrive(rel)[0]:
        raise WSOLDataError(
            f'{where}: {what} {rel!r} points outside the data root (absolute or with ..); '
            'paths must be relative to the root'
        )
    return os.path.join(root, rel)


def parse_number(text: str, kind: type, path: str, lineno: int, what: str) -> int | float:
    """Parse one field as ``int`` or ``float``, naming the file, line and field on failure."""
    try:
        return kind(text)
    except ValueError:
        raise WSOLDataError(
            f'{path}:{lineno}: {what} must be {"an integer" if kind is int else "a number"}, got {text!r}'
        ) from None


def check_box(box: Box, size: tuple[int, int], image_id: str, where: str) -> None:
    """Raise unless ``box`` (x0 y0 x1 y1) is ordered and inside a ``size = (W, H)`` image.

    A far edge equal to W (or H) is accepted: ``x + w`` for a box touching the border gives it, and the
    references keep such boxes as they are. Anything further out is an annotation error.
    """
    x0, y0, x1, y1 = box
    w, h = size
    if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
        raise WSOLDataError(
            f'{where}: box {list(box)} of image {image_id!r} is outside its {w}x{h} image or not ordered '
            f'(expected 0 <= x0 <= x1 <= {w} and 0 <= y0 <= y1 <= {h})'
        )


def select_boxes(boxes: Sequence[Box], gt_box_mode: str) -> tuple[Box, ...]:
    """Apply the ImageNet box convention: ``'all'`` boxes of an image, or only the ``'first'`` listed."""
    if gt_box_mode == 'first':
        return tuple(boxes[:1])
    return tuple(boxes)
