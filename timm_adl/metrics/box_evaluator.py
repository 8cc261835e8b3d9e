"""MaxBoxAcc and MaxBoxAccV2, streaming: wsolevaluation's ``BoxEvaluator`` without its data loading."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .boxes import (
    BoxWorkers,
    batch_boxes,
    best_iou,
    check_gt_boxes,
    check_num_threads,
    check_thresholds,
    chunk_bounds,
    quantised_scoremaps,
)


def check_iou_thresholds(iou_thresholds: Iterable[float]) -> tuple:
    """IoU thresholds in percent (the reference's 30, 50, 70), each in (0, 100]."""
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
    if len(set(out)) != len(out):
        raise ValueError(f'iou_thresholds must be distinct, got {out}')
    return out


class BoxEvaluator:
    """Box accuracy of score maps at every CAM threshold and IoU threshold, accumulated batch by batch.

    For an IoU threshold δ and a CAM threshold τ, BoxAcc(τ, δ) is the percentage of images whose box
    at τ overlaps one of the image's ground-truth boxes with IoU >= δ / 100; MaxBoxAcc(δ) is its
    maximum over τ (each δ picks its own τ). The numbers equal wsolevaluation's ``BoxEvaluator`` on the
    same maps and (already resized) boxes.

    Args:
        cam_thresholds: CAM thresholds in [0, 1]; default ``np.arange(0, 1, 0.01)``.
        iou_thresholds: IoU thresholds in percent.
        multi_contour: score every contour's box and keep the best (the MaxBoxAccV2 setting) instead of
            the largest contour's box only.
        gt_box_mode: ``'all'`` ground-truth boxes of an image count (default), or only the ``'first'``
            (the convention of the ADL paper's ImageNet numbers).
        num_threads: threads that extract boxes (``None``: every core; 1: this thread). With more than
            one, ``update`` returns while they work on its batch (up to two batches behind), so the
            extraction overlaps with the caller's next step; ``compute`` waits for them.

    Example::

        ev = BoxEvaluator(multi_contour=True)
        ev.update(scoremaps, gt_boxes)  # (N, H, W) in [0, 1]; N arrays (K_i, 4) of x0 y0 x1 y1 at H x W
        r = ev.compute()  # r['max_box_acc'][50], r['max_box_acc_v2'], r['curves'][50] ...
    """

    def __init__(
        self,
        cam_thresholds: Iterable[float] | None = None,
        iou_thresholds: Sequence[float] = (30, 50, 70),
        multi_contour: bool = False,
        gt_box_mode: str = 'all',
        num_threads: int | None = None,
    ):
        self.cam_thresholds = check_thresholds(cam_thresholds)
        self.num_threads = check_num_threads(num_threads)
        self._workers = BoxWorkers(self.num_threads)
        self.iou_thresholds = check_iou_thresholds(iou_thresholds)
        self.multi_contour = bool(multi_contour)
        check_gt_boxes([], 0, gt_box_mode)
        self.gt_box_mode = gt_box_mode
        self.reset()

    def __getstate__(self) -> dict:  # a copy or a pickle holds every submitted batch
        self._workers.wait()
        return self.__dict__.copy()

    def reset(self) -> None:
        """Forget every accumulated map."""
        self._workers.discard()
        self.num_images = 0
        self.num_correct = {d: np.zeros(len(self.cam_thresholds)) for d in self.iou_thresholds}

    def update(self, scoremaps, gt_boxes) -> None:
        """Add a batch: ``scoremaps`` (N, H, W) in [0, 1]; ``gt_boxes`` N arrays (K_i, 4) at H x W."""
        # q is our own copy: the caller may reuse its arrays while the workers run
        q = quantised_scoremaps(scoremaps)[1]
        n, h, w = q.shape
        gt = check_gt_boxes(gt_boxes, n, self.gt_box_mode)

        def chunk(a: int, b: int) -> np.ndarray:
            res = batch_boxes(q[a:b], self.cam_thresholds, self.multi_contour, not self.multi_contour)
            per_query = best_iou(res, gt[a:b])['multi' if self.multi_contour else 'largest']
            return per_query[res['levels'].query]  # (b - a, T) best IoU at each CAM threshold

        def finish(parts: list) -> None:
            for ious in parts:
                for d in self.iou_thresholds:
                    self.num_correct[d] += (ious >= d / 100).sum(axis=0)
            self.num_images += n

        self._workers.submit(chunk, chunk_bounds(n, h, w, self.num_threads), finish)

    def compute(self) -> dict:
        """MaxBoxAcc per IoU threshold, their mean, the curves and the best CAM thresholds (percent).

        Returns:
            ``max_box_acc``: {δ: %}; ``max_box_acc_v2``: the mean of those (MaxBoxAccV2 when
            ``multi_contour`` and δ = 30, 50, 70); ``curves``: {δ: (T,) BoxAcc over ``cam_thresholds``};
            ``best_thresholds``: {δ: first CAM threshold reaching the maximum}; ``cam_thresholds``;
            ``num_images``; ``multi_contour``.
        """
        self._workers.wait()
        if self.num_images == 0:
            raise ValueError('BoxEvaluator.compute() needs at least one update() with score maps')
        curves = {d: self.num_correct[d] * 100.0 / float(self.num_images) for d in self.iou_thresholds}
        best = {d: float(c.max()) for d, c in curves.items()}
        return {
            'max_box_acc': best,
            'max_box_acc_v2': float(np.average(list(best.values()))),
            'curves': curves,
            'best_thresholds': {d: float(self.cam_thresholds[int(np.argmax(c))]) for d, c in curves.items()},
            'cam_thresholds': self.cam_thresholds.copy(),
            'num_images': self.num_images,
            'multi_contour': self.multi_contour,
        }
