"""MaxBoxAcc and MaxBoxAccV2, streaming: wsolevaluation's ``BoxEvaluator`` without its data loading."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._checks import check_gt_boxes, check_iou_thresholds, quantised_scoremaps  # noqa: F401  (re-exported)
from ._iou import best_iou
from ._streaming import StreamingBoxEvaluator
from ._workers import chunk_bounds
from .boxes import batch_boxes
from .result import BoxAccuracy, WSOLResult


class BoxEvaluator(StreamingBoxEvaluator):
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
        r = ev.result()  # the same as a typed WSOLResult (box_acc or box_acc_v2, by multi_contour)

    Evaluators of disjoint images combine exactly: ``merge`` (another evaluator) and ``all_reduce``
    (every ``torch.distributed`` rank's).
    """

    def __init__(
        self,
        cam_thresholds: Iterable[float] | None = None,
        iou_thresholds: Sequence[float] = (30, 50, 70),
        multi_contour: bool = False,
        gt_box_mode: str = 'all',
        num_threads: int | None = None,
    ):
        super().__init__(cam_thresholds, iou_thresholds, gt_box_mode, num_threads)
        self.multi_contour = bool(multi_contour)
        self.reset()

    def _counter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f'correct@{d}': (len(self.cam_thresholds),) for d in self.iou_thresholds}

    def _settings(self) -> tuple:
        return (*super()._settings(), self.multi_contour)

    def update(self, scoremaps, gt_boxes) -> None:
        """Add a batch: ``scoremaps`` (N, H, W) in [0, 1]; ``gt_boxes`` N arrays (K_i, 4) at H x W."""
        # q is our own copy: the caller may reuse its arrays while the workers run
        q = quantised_scoremaps(scoremaps)[1]
        n, h, w = q.shape
        gt = check_gt_boxes(gt_boxes, n, self.gt_box_mode, (h, w))

        def chunk(a: int, b: int) -> np.ndarray:
            res = batch_boxes(q[a:b], self.cam_thresholds, self.multi_contour, not self.multi_contour)
            per_query = best_iou(res, gt[a:b])['multi' if self.multi_contour else 'largest']
            return per_query[res['levels'].query]  # (b - a, T) best IoU at each CAM threshold

        def finish(parts: list) -> None:
            for ious in parts:
                for d in self.iou_thresholds:
                    self.counts[f'correct@{d}'] += (ious >= d / 100).sum(axis=0)
            self.counts['images'] += n

        self._workers.submit(chunk, chunk_bounds(n, h, w, self.num_threads), finish)

    def compute(self) -> dict:
        """MaxBoxAcc per IoU threshold, their mean, the curves and the best CAM thresholds (percent).

        Returns:
            ``max_box_acc``: {δ: %}; ``max_box_acc_v2``: the mean of those (MaxBoxAccV2 when
            ``multi_contour`` and δ = 30, 50, 70); ``curves``: {δ: (T,) BoxAcc over ``cam_thresholds``};
            ``best_thresholds``: {δ: first CAM threshold reaching the maximum}; ``cam_thresholds``;
            ``num_images``; ``multi_contour``.
        """
        r = self.result()
        curves = r.box_acc_v2 if self.multi_contour else r.box_acc
        best = curves.best
        return {
            'max_box_acc': best,
            'max_box_acc_v2': curves.mean,
            'curves': curves.curves,
            'best_thresholds': curves.best_thresholds,
            'cam_thresholds': self.cam_thresholds.copy(),
            'num_images': r.num_images,
            'multi_contour': self.multi_contour,
        }

    def result(self) -> WSOLResult:
        """The typed result: ``box_acc_v2`` (every contour) or ``box_acc`` (largest), per ``multi_contour``."""
        n = self.num_images
        if n == 0:
            raise ValueError('BoxEvaluator.compute() needs at least one update() with score maps')
        curves = {d: self.counts[f'correct@{d}'] * 100.0 / float(n) for d in self.iou_thresholds}
        acc = BoxAccuracy(self.multi_contour, self.cam_thresholds.copy(), curves)
        return WSOLResult(n, **{'box_acc_v2' if self.multi_contour else 'box_acc': acc})
