"""Boxes from score maps, with the exact semantics of wsolevaluation's ``evaluation.py``.

A score map in [0, 1] is quantised to 8 bits by truncation, ``q = (map * 255).astype(uint8)`` (in float64,
as the reference receives its maps). At a threshold ``thr`` the kept pixels are those with
``q > int(thr * q.max())``. Their contours are OpenCV's ``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``:
one outer contour per 8-connected component and one hole contour per 4-connected hole. A contour's box
is its ``boundingRect`` as ``x0, y0, x0 + w, y0 + h`` (one pixel past the last one), clipped to
``W - 1`` / ``H - 1``. The largest-contour variant keeps the contour of largest polygon area
(``contourArea``, the first one on ties); the multi-contour variant keeps all. No contour gives
``[0, 0, 0, 0]``.

:func:`extract_boxes` gives those boxes for one map; :func:`batch_boxes` for a batch of maps at every
threshold (:func:`._iou.best_iou` scores them against the ground truth). They read the boxes off one
union-find sweep per map (:mod:`._levelsets`) instead of running the contour finder once per threshold.
The sweep also picks the largest of several contours, by bounds or by exact polygon areas; OpenCV is
still run where neither settles it (a tie in area, which OpenCV's contour order breaks, or a hole that
leaves the order open): a few maps in a thousand of smooth CAMs.

This module is the box extraction; the input checks (:mod:`._checks`), the worker threads
(:mod:`._workers`) and the IoU (:mod:`._iou`) live beside it and are re-exported here, their public path.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from ._checks import (  # noqa: F401  (re-exported: the public import path of the checks)
    _all_valid_boxes,
    _check_range,
    as_scoremaps,
    check_boxes,
    check_gt_boxes,
    check_thresholds,
    default_cam_thresholds,
    quantised_scoremaps,
)
from ._iou import _iou, best_iou, iou_inclusive, resize_boxes  # noqa: F401  (re-exported)
from ._levelsets import quantise, sweep
from ._workers import CHUNK_PIXELS, BoxWorkers, check_num_threads, chunk_bounds  # noqa: F401  (re-exported)

__all__ = ['default_cam_thresholds', 'extract_boxes', 'iou_inclusive', 'quantize_scoremaps', 'resize_boxes']


def quantize_scoremaps(scoremaps: np.ndarray) -> np.ndarray:
    """The reference's 8-bit map: ``(map * 255).astype(uint8)`` computed in float64 (truncation).

    The same kernel as the evaluators' (:func:`._levelsets.quantise`), for maps of any shape.
    """
    arr = np.ascontiguousarray(scoremaps, dtype=np.float64)
    return quantise(arr.reshape(1, 1, -1))[0].reshape(arr.shape)


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
