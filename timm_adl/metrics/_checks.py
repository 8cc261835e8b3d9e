"""Input checks of the box and mask evaluators: score maps, thresholds, boxes, logits and labels.

Each check gives one line naming the bad value and what was expected; the fast paths check a whole batch
with a few array operations and fall back to image-by-image checks only to name the culprit.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._levelsets import quantise


def default_cam_thresholds() -> np.ndarray:
    """The reference's threshold list: ``np.arange(0, 1, 0.01)`` (100 values, 1.0 excluded)."""
    return np.arange(0, 1, 0.01)


def as_scoremaps(scoremaps, name: str = 'scoremaps', check_range: bool = True) -> np.ndarray:
    """(N, H, W) float32 or float64 array from an array, tensor or sequence of 2-D maps, checked.

    Maps must be finite and in [0, 1], as the reference requires (``check_range=False`` leaves that to
    the caller: :func:`quantised_scoremaps` checks it while quantising). float32 and float64 are kept as
    they are (the 8-bit quantisation is done in float64, as the reference does after ``t2n``).
    """
    if hasattr(scoremaps, 'detach'):  # a torch tensor
        import torch

        t = scoremaps.detach().cpu()
        if not t.is_floating_point():
            raise ValueError(f'{name} must hold floats in [0, 1], got dtype {t.dtype}')
        arr = (t if t.dtype in (torch.float32, torch.float64) else t.float()).numpy()
    elif isinstance(scoremaps, np.ndarray):
        arr = scoremaps
    else:
        arr = np.stack([np.asarray(m) for m in scoremaps]) if len(scoremaps) else np.zeros((0, 1, 1))
    if arr.dtype.kind != 'f':
        raise ValueError(f'{name} must hold floats in [0, 1], got dtype {arr.dtype}')
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    if arr.ndim != 3:
        raise ValueError(f'{name} must have shape (N, H, W), got {tuple(arr.shape)}')
    if arr.shape[0] and not (0 < arr.shape[1] < 32000 and 0 < arr.shape[2] < 32000):
        raise ValueError(
            f'{name} must be between 1 and 31999 pixels high and wide, got {tuple(arr.shape[1:])}'
        )
    if check_range:
        _check_range(arr, name)
    return np.ascontiguousarray(arr)


def _check_range(arr: np.ndarray, name: str) -> None:
    if arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f'{name} must not contain NaN or infinite values')
        if lo < 0 or hi > 1:
            raise ValueError(f'{name} must be in [0, 1] (min-max normalised), got values in [{lo:g}, {hi:g}]')


def quantised_scoremaps(scoremaps, name: str = 'scoremaps') -> tuple[np.ndarray, np.ndarray]:
    """``(maps, q)``: :func:`as_scoremaps` and the reference's 8-bit maps, the range checked in the same
    pass as the quantisation (``q`` is a new array: the caller may reuse ``scoremaps`` at once)."""
    maps = as_scoremaps(scoremaps, name, check_range=False)
    q, in_range = quantise(maps)
    if not in_range:
        _check_range(maps, name)
    return maps, q


def check_boxes(boxes, name: str = 'boxes') -> np.ndarray:
    """(K, 4) int64 array of inclusive ``x0 y0 x1 y1`` boxes, checked as the reference checks them."""
    arr = np.asarray(boxes.detach().cpu().numpy() if hasattr(boxes, 'detach') else boxes)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr.reshape(1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f'{name} must have shape (K, 4) (x0, y0, x1, y1), got {tuple(arr.shape)}')
    if arr.dtype.kind == 'f':
        if not np.isfinite(arr).all():
            raise ValueError(f'{name} must be finite')
        if (arr != np.floor(arr)).any():
            raise ValueError(
                f'{name} must hold whole pixel coordinates, got {arr[(arr != np.floor(arr)).any(1)][0]}'
            )
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        raise ValueError(f'{name} must be non-negative, got {arr[(arr < 0).any(1)][0].tolist()}')
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        raise ValueError(
            f'{name} must satisfy x1 >= x0 and y1 >= y0 (inclusive x0 y0 x1 y1), got {arr[bad][0].tolist()}'
        )
    return arr


def check_thresholds(cam_thresholds: Iterable[float] | None) -> np.ndarray:
    """Threshold list as a float64 array (default ``np.arange(0, 1, 0.01)``), each in [0, 1]."""
    if cam_thresholds is None:
        return default_cam_thresholds()
    arr = np.asarray(
        list(cam_thresholds) if not isinstance(cam_thresholds, np.ndarray) else cam_thresholds,
        dtype=np.float64,
    ).reshape(-1)
    if arr.size == 0:
        raise ValueError('cam_thresholds must not be empty')
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f'cam_thresholds must be in [0, 1], got values in [{arr.min():g}, {arr.max():g}]')
    return arr


class ImageError(ValueError):
    """A bad input of one image of a batch: ``index`` is its position, so a caller can name the image."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def check_gt_boxes(
    gt_boxes, n: int, mode: str = 'all', map_size: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """Per-image ground-truth boxes, checked: ``mode='first'`` keeps each image's first box only.

    With ``map_size = (H, W)`` a box must lie on the score map (coordinates up to ``W`` and ``H``: one
    past the last pixel, which the reference's resizing gives a box that touches the image's edge); a box
    beyond it was not resized to the map, and would score 0 % without a word.
    """
    if mode not in ('all', 'first'):
        raise ValueError(f"gt_box_mode must be 'all' or 'first', got {mode!r}")
    if hasattr(gt_boxes, 'detach') or (isinstance(gt_boxes, np.ndarray) and gt_boxes.dtype != object):
        gt_boxes = list(gt_boxes)  # (N, K, 4) array or tensor: the same K boxes per image
    if len(gt_boxes) != n:
        raise ValueError(
            f'gt_boxes must hold one (K, 4) array per score map: got {len(gt_boxes)} for {n} maps'
        )
    fast = _all_valid_boxes(gt_boxes, map_size)
    if fast is not None:
        return [a[:1] for a in fast] if mode == 'first' else fast
    out = []  # something is wrong: check image by image, for an error that names the image
    for i, b in enumerate(gt_boxes):
        try:
            arr = check_boxes(b, f'gt_boxes[{i}]')
        except ValueError as err:
            raise ImageError(str(err), i) from None
        if arr.shape[0] == 0:
            raise ImageError(f'gt_boxes[{i}] is empty: every image needs at least one ground-truth box', i)
        if map_size is not None and not _on_map(arr, map_size).all():
            h, w = map_size
            bad = arr[~_on_map(arr, map_size)][0].tolist()
            raise ImageError(
                f'gt_boxes[{i}] box {bad} lies outside the {h}x{w} score map (x up to {w}, y up to {h}): '
                "give boxes at the score map's size (timm_adl.metrics.resize_boxes)",
                i,
            )
        out.append(arr[:1] if mode == 'first' else arr)
    return out


def _on_map(boxes: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """(K,) whether each valid box lies on an H x W map."""
    h, w = map_size
    return (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)


def _all_valid_boxes(gt_boxes, map_size: tuple[int, int] | None = None) -> list[np.ndarray] | None:
    """The images' int64 boxes, checked all at once (one set of array operations per batch, not per
    image), or None if any image's boxes would fail :func:`check_gt_boxes` or are empty."""
    arrays = []
    for b in gt_boxes:
        arr = np.asarray(b.detach().cpu().numpy() if hasattr(b, 'detach') else b)
        if arr.ndim == 1 and arr.size == 4:
            arr = arr.reshape(1, 4)
        if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0 or arr.dtype.kind not in 'iuf':
            return None
        arrays.append(arr)
    if not arrays:
        return []
    every = np.concatenate(arrays)
    if every.dtype.kind == 'f' and not (np.isfinite(every).all() and (every == np.floor(every)).all()):
        return None
    every = every.astype(np.int64)
    if (every < 0).any() or (every[:, 2] < every[:, 0]).any() or (every[:, 3] < every[:, 1]).any():
        return None
    if map_size is not None and not _on_map(every, map_size).all():
        return None
    return np.split(every, np.cumsum([a.shape[0] for a in arrays[:-1]]))


def check_iou_thresholds(iou_thresholds: Iterable[float]) -> tuple:
    """IoU thresholds in percent (the reference's 30, 50, 70), each in (1, 100].

    Values in (0, 1] are refused: they are almost surely fractions (0.5 meant as 50 %), which would be
    read as 0.5 % and make every box count.
    """
    out = tuple(iou_thresholds)
    if not out:
        raise ValueError('iou_thresholds must not be empty')
    for d in out:
        if (
            isinstance(d, bool)
            or not isinstance(d, (int, float, np.integer, np.floating))
            or not 0 < d <= 100
        ):
            raise ValueError(f'iou_thresholds are percentages in (0, 100], e.g. (30, 50, 70); got {d!r}')
        if d <= 1:
            raise ValueError(
                f'iou_thresholds are percentages, got {d!r}: did you mean {d * 100:g}? '
                '(values in (0, 1] are refused as fractions; e.g. (30, 50, 70))'
            )
    if len(set(out)) != len(out):
        raise ValueError(f'iou_thresholds must be distinct, got {out}')
    return out


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


def check_logits_labels(logits, labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (N, K), labels (N,) int64)``: finite scores, and labels that are classes of the scores."""
    scores = _as_numpy(logits)
    labels = _as_numpy(labels).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != n:
        raise ValueError(f'logits must have shape (N, num_classes) with N = {n}, got {tuple(scores.shape)}')
    if labels.shape[0] != n:
        raise ValueError(f'labels must have {n} entries, got {labels.shape[0]}')
    if scores.dtype.kind not in 'iuf':
        raise ValueError(f'logits must be numbers, got dtype {scores.dtype}')
    if scores.dtype.kind == 'f' and scores.size and not np.isfinite(scores).all():
        i = int(np.flatnonzero(~np.isfinite(scores).all(axis=1))[0])
        raise ImageError(
            f'logits[{i}] holds NaN or infinite values: the model diverged or the input is bad', i
        )
    if labels.dtype.kind == 'f' and labels.size and not (labels == np.floor(labels)).all():
        raise ValueError(f'labels must be whole class indices, got {labels[labels != np.floor(labels)][0]}')
    if labels.dtype.kind not in 'iuf':
        raise ValueError(f'labels must be class indices, got dtype {labels.dtype}')
    k = scores.shape[1]
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if bad.size:
        i = int(bad[0])
        raise ImageError(
            f'labels[{i}] is {labels[i]!r}: class indices must be in [0, {k}) for logits of {k} classes', i
        )
    return scores, labels.astype(np.int64)
