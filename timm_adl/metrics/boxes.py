"""Boxes from score maps and box overlap, with the exact semantics of wsolevaluation's ``evaluation.py``.

A score map in [0, 1] is quantised to 8 bits by truncation, ``q = (map * 255).astype(uint8)`` (in float64,
as the reference receives its maps). At a threshold ``thr`` the kept pixels are those with
``q > int(thr * q.max())``. Their contours are OpenCV's ``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``:
one outer contour per 8-connected component and one hole contour per 4-connected hole. A contour's box
is its ``boundingRect`` as ``x0, y0, x0 + w, y0 + h`` (one pixel past the last one), clipped to
``W - 1`` / ``H - 1``. The largest-contour variant keeps the contour of largest polygon area
(``contourArea``, the first one on ties); the multi-contour variant keeps all. No contour gives
``[0, 0, 0, 0]``.

:func:`extract_boxes` gives those boxes for one map; :func:`batch_boxes` for a batch of maps at every
threshold, and :func:`best_iou` scores them against the ground truth. They read the boxes off one
union-find sweep per map (:mod:`._levelsets`) instead of running the contour finder once per threshold.
The sweep also picks the largest of several contours, by bounds or by exact polygon areas; OpenCV is
still run where neither settles it (a tie in area, which OpenCV's contour order breaks, or a hole that
leaves the order open): a few maps in a thousand of smooth CAMs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from ._levelsets import best_overlap, quantise, sweep

__all__ = ['default_cam_thresholds', 'extract_boxes', 'iou_inclusive', 'quantize_scoremaps', 'resize_boxes']

# pixels per call of the compiled sweep: its set-up (about 0.15 ms, mostly its work arrays) amortised
CHUNK_PIXELS = 4_000_000


def check_num_threads(num_threads: int | None) -> int:
    """Threads for box extraction: ``None`` means every CPU core this process may use."""
    if num_threads is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f'num_threads must be a positive int or None (every core), got {num_threads!r}')
    return int(num_threads)


def chunk_bounds(n: int, h: int, w: int, num_threads: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` chunks of a batch of ``n`` maps of ``h x w``: each small enough for one
    call of the compiled sweep and, with several threads, as many for every thread."""
    if n == 0:
        return []
    n_chunks = -(-n // max(1, CHUNK_PIXELS // max(1, h * w)))
    threads = min(num_threads, n_chunks)
    if threads > 1:
        n_chunks = -(-n_chunks // threads) * threads
    size = -(-n // n_chunks)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


class BoxWorkers:
    """Runs the box extraction of each batch in chunks on worker threads, then the batch's ``finish``.

    ``submit`` returns while the workers go on, up to ``depth`` batches ahead, so the extraction of one
    batch overlaps with whatever the caller does next (the next batch's checks, a model's forward pass);
    ``wait`` finishes them all. ``finish`` callbacks run on the calling thread, in submission order, so
    the evaluators' counters need no lock. The compiled kernels and OpenCV release the GIL. A chunk must
    only read arrays the caller cannot change afterwards (the evaluators hand over their own 8-bit
    copies). With one thread everything runs inside ``submit``.
    """

    def __init__(self, num_threads: int, depth: int = 2):
        self.num_threads = num_threads
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque = deque()

    def submit(self, fn: Callable[[int, int], object], bounds: list, finish: Callable[[list], None]) -> None:
        """``finish([fn(a, b) for a, b in bounds])``, now or after a later call."""
        if self.num_threads <= 1:
            finish([fn(a, b) for a, b in bounds])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix='timm_adl_boxes')
        self._pending.append(([self._pool.submit(fn, a, b) for a, b in bounds], finish))
        while len(self._pending) > self.depth:
            self._finish_oldest()

    def wait(self) -> None:
        """Finish every submitted batch (a worker's exception is raised here)."""
        while self._pending:
            self._finish_oldest()

    def discard(self) -> None:
        """Wait for the submitted batches without finishing them."""
        while self._pending:
            for f in self._pending.popleft()[0]:
                f.exception()

    def _finish_oldest(self) -> None:
        futures, finish = self._pending.popleft()
        finish([f.result() for f in futures])

    def __getstate__(self) -> dict:  # copies and pickles carry the finished state, not the threads
        self.wait()
        return {'num_threads': self.num_threads, 'depth': self.depth}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state['num_threads'], state['depth'])


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


def quantize_scoremaps(scoremaps: np.ndarray) -> np.ndarray:
    """The reference's 8-bit map: ``(map * 255).astype(uint8)`` computed in float64 (truncation).

    The same kernel as the evaluators' (:func:`._levelsets.quantise`), for maps of any shape.
    """
    arr = np.ascontiguousarray(scoremaps, dtype=np.float64)
    return quantise(arr.reshape(1, 1, -1))[0].reshape(arr.shape)


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


def iou_inclusive(boxes_a, boxes_b) -> np.ndarray:
    """(A, B) IoU of inclusive pixel boxes: areas are ``(x1 - x0 + 1) * (y1 - y0 + 1)``.

    The reference's ``calculate_multiple_iou``: a non-positive union (impossible for valid boxes) gives 0.
    """
    a = check_boxes(boxes_a, 'boxes_a')[:, None, :]
    b = check_boxes(boxes_b, 'boxes_b')[None, :, :]
    return _iou(a, b)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcast int64 boxes (..., 4), with the reference's exact float operations."""
    inter = np.maximum(
        0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ) * np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    den = area_a + area_b - inter
    ok = den > 0
    return np.where(ok, inter / np.where(ok, den, 1), 0.0)


def resize_boxes(boxes, image_size: Sequence[int], resize_size: Sequence[int]) -> np.ndarray:
    """Boxes of an image of ``image_size = (W, H)`` mapped to ``resize_size = (W', H')``, the reference's way.

    Each coordinate is multiplied by ``W' / W`` (or ``H' / H``) in float64 and truncated with ``int()``
    (wsolevaluation's ``resize_bbox``), so a box can lose up to a pixel on each side.
    """
    arr = check_boxes(boxes)
    (w, h), (nw, nh) = (tuple(float(v) for v in image_size), tuple(float(v) for v in resize_size))
    if min(w, h, nw, nh) <= 0:
        raise ValueError(f'image sizes must be positive, got {tuple(image_size)} -> {tuple(resize_size)}')
    scale = np.array([nw, nh, nw, nh])
    size = np.array([w, h, w, h])
    return (arr.astype(np.float64) * scale / size).astype(np.int64)


def contour_boxes(q: np.ndarray, level: int, multi_contour: bool) -> np.ndarray:
    """The reference's boxes of one 8-bit map at one integer level, straight from OpenCV."""
    h, w = q.shape
    _, binary = cv2.threshold(q, level, 255, cv2.THRESH_BINARY)
    # [-2]: OpenCV 3 returns (image, contours, hierarchy), later versions (contours, hierarchy)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    out = np.empty((len(contours), 4), dtype=np.int64)
    for i, c in enumerate(contours):
        x, y, bw, bh = cv2.boundingRect(c)
        out[i] = (x, y, min(x + bw, w - 1), min(y + bh, h - 1))
    return out


class _Levels:
    """Per-map integer levels of a batch: threshold ``thr`` of map i becomes ``int(thr * q_i.max())``.

    A *query* is one distinct level of one map; ``query[i, k]`` is the query of threshold k of map i.
    Maps with the same maximum share their levels (computed once).
    """

    def __init__(self, q: np.ndarray, thresholds: np.ndarray):
        n = q.shape[0]
        self.q_max = q.reshape(n, -1).max(axis=1) if q.size else np.zeros(n, dtype=np.uint8)
        # the reference's int(threshold * np.max(scoremap_image)), in float64, truncated
        maxima, self._group = np.unique(self.q_max, return_inverse=True)
        t = (thresholds[None, :] * maxima[:, None].astype(np.float64)).astype(np.int64)
        uniq = [np.unique(row) for row in t]
        index = [np.searchsorted(u, row) for u, row in zip(uniq, t, strict=True)]
        # levels fit a byte unless a map has 255 or more distinct levels (the dual's frame is one above)
        self.dtype = np.uint8 if max((u.size for u in uniq), default=0) < 255 else np.uint16
        self._luts = [np.searchsorted(u, np.arange(256), side='left').astype(self.dtype) for u in uniq]
        self.unique = [uniq[g] for g in self._group]
        self.k = np.array([u.size for u in uniq], dtype=np.int64)[self._group] if n else np.zeros(0, np.int64)
        self.offset = np.concatenate([[0], np.cumsum(self.k)]).astype(np.int64)
        self.query = (
            self.offset[:-1, None] + np.stack(index)[self._group]
            if n
            else np.zeros((0, len(thresholds)), np.int64)
        )
        self.map_of_query = np.repeat(np.arange(n), self.k)
        self.index_of_query = np.arange(int(self.offset[-1])) - np.repeat(self.offset[:-1], self.k)
        self.value_of_query = np.concatenate(self.unique) if n else np.zeros(0, dtype=np.int64)

    def groups(self):
        """(level lookup table of the 8-bit values, maps that use it) for each distinct maximum."""
        for g, lut in enumerate(self._luts):
            yield lut, np.flatnonzero(self._group == g)


def _prepare(q: np.ndarray, thresholds: np.ndarray):
    """The levels of 8-bit maps (:class:`_Levels`) and the level of each 8-bit value per map (N, 256)."""
    lv = _Levels(q, thresholds)
    return lv, np.stack(lv._luts).astype(np.int16)[lv._group]


def batch_boxes(q: np.ndarray, thresholds: np.ndarray, multi_contour: bool, largest: bool = True) -> dict:
    """Boxes of every 8-bit map (``quantised_scoremaps(scoremaps)[1]``) of a batch at every threshold.

    Returns a dict with ``levels`` (the :class:`_Levels`), and for each variant asked for,
    ``largest``: (Q, 4) int64 box per query; ``contours`` and ``holes``: ``(query (B,), boxes (B, 4))`` of
    the outer and the hole contours, each sorted by query (:func:`multi_boxes` merges them). A query is a
    distinct integer level of a map (``levels.query`` maps thresholds to queries).
    """
    n, h, w = q.shape
    e = (np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64))
    if n == 0:
        lv = _Levels(np.zeros((0, h, w), dtype=np.uint8), thresholds)
        return {'levels': lv, 'largest': e[1], 'contours': e, 'holes': e}
    lv, luts = _prepare(q, thresholds)
    out: dict = {'levels': lv}
    cq, x0, y0, x1, y1, decided, wbox = sweep(q, luts, lv.k, lv.offset, True, largest)
    cbox = np.stack([x0, y0, np.minimum(x1 + 1, w - 1), np.minimum(y1 + 1, h - 1)], axis=1).astype(np.int64)
    if largest:
        out['largest'] = _largest(cq, cbox, decided, wbox, lv, q)
    if multi_contour:
        hq, hx0, hy0, hx1, hy1, *_ = sweep(q, luts, lv.k, lv.offset, False, False)
        hbox = np.stack(
            [hx0 - 1, hy0 - 1, np.minimum(hx1 + 2, w - 1), np.minimum(hy1 + 2, h - 1)], axis=1
        ).astype(np.int64)
        out['contours'] = (cq, cbox)
        out['holes'] = (hq, hbox)
    return out


def multi_boxes(res: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every contour's box per query of :func:`batch_boxes`, sorted by query: ``(query (B,), boxes (B, 4))``.

    A query without any contour gets the reference's one ``[0, 0, 0, 0]`` box.
    """
    n_q = int(res['levels'].offset[-1])
    (cq, cbox), (hq, hbox) = res['contours'], res['holes']
    empty = np.flatnonzero(np.bincount(cq, minlength=n_q) == 0)
    mq = np.concatenate([cq, hq, empty])
    mb = np.concatenate([cbox, hbox, np.zeros((empty.size, 4), dtype=np.int64)])
    srt = np.argsort(mq, kind='stable')
    return mq[srt], mb[srt]


def _largest(
    cq: np.ndarray, cbox: np.ndarray, decided: np.ndarray, wbox: np.ndarray, lv: _Levels, q: np.ndarray
) -> np.ndarray:
    """Box of the contour of largest polygon area, per query (``decided``, ``wbox``: from the sweep)."""
    n_q = int(lv.offset[-1])
    out = np.zeros((n_q, 4), dtype=np.int64)
    if cq.size == 0:
        return out
    counts = np.bincount(cq, minlength=n_q)
    single = counts[cq] == 1
    out[cq[single]] = cbox[single]
    multi = np.flatnonzero(counts > 1)
    if multi.size == 0:
        return out
    # Several components: a hole's polygon never exceeds its component's (and ties keep the component,
    # listed first), so the largest contour is a component's; the sweep found it wherever bounds or
    # exact areas settle it (``_levelsets._pick_largest``).
    h, w = q.shape[1:]
    ok = decided[multi]
    wb = wbox[multi].astype(np.int64)
    out[multi[ok]] = np.stack(
        [wb[ok, 0], wb[ok, 1], np.minimum(wb[ok, 2] + 1, w - 1), np.minimum(wb[ok, 3] + 1, h - 1)], axis=1
    )
    # Otherwise OpenCV decides, on the box around the candidates the sweep gave (with a pixel of
    # margin): a component cut by that box cannot reach the winner, so when the largest area there is
    # unique, it is the reference's.
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return out
    x0 = np.maximum(wb[bad, 0] - 1, 0).tolist()
    y0 = np.maximum(wb[bad, 1] - 1, 0).tolist()
    x1 = np.minimum(wb[bad, 2] + 2, w).tolist()
    y1 = np.minimum(wb[bad, 3] + 2, h).tolist()
    qis = multi[bad]
    maps = lv.map_of_query[qis].tolist()
    levels = lv.value_of_query[qis].tolist()
    for qi, i, level, a, b, c, d in zip(qis.tolist(), maps, levels, x0, y0, x1, y1, strict=True):
        box = _unique_largest(q[i, b:d, a:c], int(level), a, b, w, h)
        out[qi] = box if box is not None else contour_boxes(q[i], int(level), multi_contour=False)[0]
    return out


def _unique_largest(q: np.ndarray, level: int, x0: int, y0: int, w: int, h: int) -> tuple | None:
    """Box of the largest outer contour of a crop at ``level``, or None if the largest area is tied."""
    binary = cv2.threshold(q, level, 1, cv2.THRESH_BINARY)[1]  # q > level
    contours = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    areas = [cv2.contourArea(c) for c in contours]
    best = max(areas)
    if areas.count(best) > 1:
        return None
    x, y, bw, bh = cv2.boundingRect(contours[areas.index(best)])
    return (x + x0, y + y0, min(x + x0 + bw, w - 1), min(y + y0 + bh, h - 1))


def extract_boxes(
    scoremap, cam_thresholds: Iterable[float] | None = None, multi_contour: bool = False
) -> list[np.ndarray]:
    """Boxes of one score map at each threshold: the reference's ``compute_bboxes_from_scoremaps``.

    Args:
        scoremap: (H, W) floats in [0, 1] (array or tensor).
        cam_thresholds: thresholds in [0, 1]; default ``np.arange(0, 1, 0.01)``.
        multi_contour: every contour's box (MaxBoxAccV2) instead of the largest contour's.

    Returns:
        One (K, 4) int64 array of inclusive ``x0 y0 x1 y1`` boxes per threshold (K = 1 unless
        ``multi_contour``); ``[[0, 0, 0, 0]]`` where no pixel is kept.
    """
    arr = scoremap.detach().cpu().numpy() if hasattr(scoremap, 'detach') else np.asarray(scoremap)
    if arr.ndim != 2:
        raise ValueError(f'scoremap must be 2-D (H, W), got shape {tuple(arr.shape)}')
    q = quantised_scoremaps(arr[None], 'scoremap')[1]
    thresholds = check_thresholds(cam_thresholds)
    res = batch_boxes(q, thresholds, multi_contour=multi_contour, largest=not multi_contour)
    queries = res['levels'].query[0]
    if not multi_contour:
        return [res['largest'][qi : qi + 1].copy() for qi in queries]
    mq, mb = multi_boxes(res)
    starts = np.searchsorted(mq, np.arange(int(res['levels'].offset[-1]) + 1))
    return [mb[starts[qi] : starts[qi + 1]].copy() for qi in queries]


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


def check_gt_boxes(gt_boxes, n: int, mode: str = 'all') -> list[np.ndarray]:
    """Per-image ground-truth boxes, checked: ``mode='first'`` keeps each image's first box only."""
    if mode not in ('all', 'first'):
        raise ValueError(f"gt_box_mode must be 'all' or 'first', got {mode!r}")
    if hasattr(gt_boxes, 'detach') or (isinstance(gt_boxes, np.ndarray) and gt_boxes.dtype != object):
        gt_boxes = list(gt_boxes)  # (N, K, 4) array or tensor: the same K boxes per image
    if len(gt_boxes) != n:
        raise ValueError(
            f'gt_boxes must hold one (K, 4) array per score map: got {len(gt_boxes)} for {n} maps'
        )
    fast = _all_valid_boxes(gt_boxes)
    if fast is not None:
        return [a[:1] for a in fast] if mode == 'first' else fast
    out = []  # something is wrong: check image by image, for an error that names the image
    for i, b in enumerate(gt_boxes):
        arr = check_boxes(b, f'gt_boxes[{i}]')
        if arr.shape[0] == 0:
            raise ValueError(f'gt_boxes[{i}] is empty: every image needs at least one ground-truth box')
        out.append(arr[:1] if mode == 'first' else arr)
    return out


def _all_valid_boxes(gt_boxes) -> list[np.ndarray] | None:
    """The images' int64 boxes, checked all at once (one set of array operations per batch, not per
    image), or None if any image's boxes would fail :func:`check_boxes` or are empty."""
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
    return np.split(every, np.cumsum([a.shape[0] for a in arrays[:-1]]))


def best_iou(res: dict, gt: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Best IoU of each query of :func:`batch_boxes` with its map's ground truth, per variant.

    ``largest``: the IoU of the largest contour's box; ``multi``: the best over every contour's box.
    """
    lv = res['levels']
    n_q = int(lv.offset[-1])
    gt_all = np.concatenate(gt) if gt else np.zeros((0, 4), dtype=np.int64)
    gt_start = np.concatenate([[0], np.cumsum([b.shape[0] for b in gt])]).astype(np.int64)
    out = {}
    if 'largest' in res:
        out['largest'] = np.full(n_q, -1.0)
        best_overlap(np.arange(n_q), res['largest'], lv.map_of_query, gt_all, gt_start, out['largest'])
    if 'contours' in res:
        out['multi'] = best = np.full(n_q, -1.0)
        for query, boxes in (res['contours'], res['holes']):
            best_overlap(query, boxes, lv.map_of_query, gt_all, gt_start, best)
        empty = np.flatnonzero(best < 0)  # no contour: the reference's [0, 0, 0, 0] box
        best_overlap(
            empty, np.zeros((empty.size, 4), dtype=np.int64), lv.map_of_query, gt_all, gt_start, best
        )
    return out
