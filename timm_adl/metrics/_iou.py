"""Box overlap with the reference's inclusive-pixel semantics, and the reference's box resizing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._checks import check_boxes
from ._levelsets import best_overlap

__all__ = ['best_iou', 'iou_inclusive', 'resize_boxes']


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
