"""Everything a WSOL validation loop reports, from one object: both protocols on the same maps.

* Paper protocol (CAM, ADL, ... papers): at one fixed CAM threshold (0.2 of the map's maximum), the box
  of the largest contour; GT-known Loc counts images whose box from the ground-truth class's CAM has
  IoU >= 0.5 with a ground-truth box; Top-1 Loc also needs the top-1 class to be right, and uses the
  top-1 class's CAM.
* Fair protocol (Choe et al., CVPR 2020): MaxBoxAcc (IoU 0.5, largest contour, best CAM threshold)
  and MaxBoxAccV2 (mean over IoU 0.3 / 0.5 / 0.7 of the best threshold of each, every contour).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ._checks import (
    as_scoremaps,
    check_gt_boxes,
    check_logits_labels,
    check_thresholds,
    quantised_scoremaps,
)
from ._iou import best_iou
from ._levelsets import quantise
from ._streaming import StreamingBoxEvaluator
from ._workers import chunk_bounds
from .boxes import batch_boxes
from .result import BoxAccuracy, WSOLResult

__all__ = ['WSOLEvaluator', 'calibrated_accuracy']


class WSOLEvaluator(StreamingBoxEvaluator):
    """Top-1 Clas, GT-known Loc, Top-1 Loc, MaxBoxAcc and MaxBoxAccV2, accumulated batch by batch.

    Args:
        cam_threshold: the paper protocol's fixed CAM threshold (fraction of each map's maximum).
        cam_thresholds: the fair protocol's threshold list; default ``np.arange(0, 1, 0.01)``.
        iou_thresholds: MaxBoxAccV2's IoU thresholds in percent (MaxBoxAcc uses 50).
        gt_box_mode: ``'all'`` ground-truth boxes (default) or the ``'first'`` of each image.
        num_threads: threads that extract boxes (``None``: every core; 1: this thread). With more than
            one, ``update`` returns while they work on its batch (up to two batches behind), so the
            extraction overlaps with the caller's next step; ``compute`` waits for them.

    Example::

        ev = WSOLEvaluator()
        for images, labels, boxes in loader:
            cams = compute_cams(model, images, labels)
            ev.update(cams.cams_gt, cams.cams_top1, boxes, cams.logits, labels)
        r = ev.compute()  # r['top1_loc'], r['gt_known_loc'], r['max_box_acc'], r['max_box_acc_v2'] ...
        r = ev.result()  # the same as a typed WSOLResult

    Evaluators of disjoint images combine exactly: ``merge`` (another evaluator) and ``all_reduce``
    (every ``torch.distributed`` rank's).
    """

    def __init__(
        self,
        cam_threshold: float = 0.2,
        cam_thresholds: Iterable[float] | None = None,
        iou_thresholds: Sequence[float] = (30, 50, 70),
        gt_box_mode: str = 'all',
        num_threads: int | None = None,
    ):
        super().__init__(cam_thresholds, iou_thresholds, gt_box_mode, num_threads)
        self.cam_threshold = float(check_thresholds([cam_threshold])[0])
        # the fixed threshold is scored with the curve's thresholds, in one pass over each map
        self._thresholds = np.append(self.cam_thresholds, self.cam_threshold)
        self.reset()

    def _counter_shapes(self) -> dict[str, tuple[int, ...]]:
        t = (len(self.cam_thresholds),)
        shapes: dict[str, tuple[int, ...]] = {'top1': (), 'gt_known': (), 'top1_loc': (), 'correct_v1': t}
        shapes.update({f'correct_v2@{d}': t for d in self.iou_thresholds})
        return shapes

    def _settings(self) -> tuple:
        return (*super()._settings(), self.cam_threshold)

    def update(self, cams_gt, cams_top1, gt_boxes, logits, labels) -> None:
        """Add a batch.

        Args:
            cams_gt: (N, H, W) CAMs of the ground-truth classes, in [0, 1].
            cams_top1: (N, H, W) CAMs of the top-1 predicted classes, or None when they are ``cams_gt``
                wherever the prediction is right (only those images count for Top-1 Loc).
            gt_boxes: N arrays (K_i, 4) of inclusive ``x0 y0 x1 y1`` boxes at H x W.
            logits: (N, num_classes) scores; the top-1 class is their arg-max.
            labels: (N,) ground-truth classes.
        """
        # q is our own copy: the caller may reuse its arrays while the workers run
        maps, q = quantised_scoremaps(cams_gt, 'cams_gt')
        n, h, w = maps.shape
        gt = check_gt_boxes(gt_boxes, n, self.gt_box_mode, (h, w))
        scores, labels = check_logits_labels(logits, labels, n)
        top1 = None
        if cams_top1 is not None and cams_top1 is not cams_gt:
            top1 = as_scoremaps(cams_top1, 'cams_top1')
            if top1.shape != maps.shape:
                raise ValueError(f'cams_top1 must have the shape of cams_gt {maps.shape}, got {top1.shape}')
        if n == 0:
            return
        right = scores.argmax(axis=1) == labels

        # Top-1 Loc: where the prediction is right the top-1 CAM is the ground-truth one; any that
        # differs is scored here, at the fixed threshold (the boxes of the rest come from the workers)
        differ = np.zeros(0, dtype=np.int64)
        differ_ok = np.zeros(0, dtype=bool)
        if top1 is not None and right.any():
            differ = np.flatnonzero(
                [r and not np.array_equal(a, b) for r, a, b in zip(right, top1, maps, strict=True)]
            )
            if differ.size:
                res1 = batch_boxes(quantise(top1[differ])[0], np.array([self.cam_threshold]), False)
                iou1 = best_iou(res1, [gt[i] for i in differ])['largest'][res1['levels'].query[:, 0]]
                differ_ok = iou1 >= 0.5

        def chunk(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
            res = batch_boxes(q[a:b], self._thresholds, multi_contour=True, largest=True)
            ious = best_iou(res, gt[a:b])
            query = res['levels'].query
            return ious['largest'][query], ious['multi'][query[:, :-1]]

        def finish(parts: list) -> None:
            largest = np.concatenate([p[0] for p in parts])
            multi = np.concatenate([p[1] for p in parts])
            gt_known = largest[:, -1] >= 0.5
            c = self.counts
            c['correct_v1'] += (largest[:, :-1] >= 0.5).sum(axis=0)
            for d in self.iou_thresholds:
                c[f'correct_v2@{d}'] += (multi >= d / 100).sum(axis=0)
            c['images'] += n
            c['top1'] += int(right.sum())
            c['gt_known'] += int(gt_known.sum())
            top1_loc = right & gt_known
            top1_loc[differ] = differ_ok
            c['top1_loc'] += int(top1_loc.sum())

        self._workers.submit(chunk, chunk_bounds(n, h, w, self.num_threads), finish)

    def compute(self) -> dict:
        """All metrics in percent, the best CAM thresholds and the curves.

        Returns:
            ``top1_clas``, ``gt_known_loc``, ``top1_loc`` (at ``cam_threshold``, IoU >= 0.5, largest
            contour); ``max_box_acc`` (IoU 50, largest contour, best threshold) and ``best_threshold``;
            ``max_box_acc_v2`` (mean over ``iou_thresholds`` of the best of each, every contour),
            ``max_box_acc_v2_per_iou`` and ``best_thresholds_v2``; ``curves``:
            ``{'box_acc': {50: (T,)}, 'box_acc_v2': {δ: (T,)}}``; ``cam_threshold``, ``cam_thresholds``,
            ``num_images``.
        """
        r = self.result()
        v2 = r.box_acc_v2
        return {
            'top1_clas': r.top1_clas,
            'gt_known_loc': r.gt_known_loc,
            'top1_loc': r.top1_loc,
            'max_box_acc': r.max_box_acc,
            'best_threshold': r.best_threshold,
            'max_box_acc_v2': r.max_box_acc_v2,
            'max_box_acc_v2_per_iou': v2.best,
            'best_thresholds_v2': v2.best_thresholds,
            'curves': r.curves(),
            'cam_threshold': self.cam_threshold,
            'cam_thresholds': self.cam_thresholds.copy(),
            'num_images': r.num_images,
        }

    def result(self) -> WSOLResult:
        """Every metric as a typed :class:`WSOLResult` (percent)."""
        num = self.num_images
        if num == 0:
            raise ValueError('WSOLEvaluator.compute() needs at least one update() with images')
        n, c = float(num), self.counts
        t = self.cam_thresholds.copy()
        v2 = {d: c[f'correct_v2@{d}'] * 100.0 / n for d in self.iou_thresholds}
        return WSOLResult(
            num,
            top1_clas=float(c['top1']) * 100.0 / n,
            gt_known_loc=float(c['gt_known']) * 100.0 / n,
            top1_loc=float(c['top1_loc']) * 100.0 / n,
            box_acc=BoxAccuracy(False, t, {50: c['correct_v1'] * 100.0 / n}),
            box_acc_v2=BoxAccuracy(True, t, v2),
            cam_threshold=self.cam_threshold,
        )


def _pick(thresholds: np.ndarray, src_curves: Mapping, tgt_curves: Mapping) -> dict:
    per = {}
    for d, curve in src_curves.items():
        if d not in tgt_curves:
            raise ValueError(f'target result has no curve for IoU {d}; it has {sorted(tgt_curves)}')
        i = int(np.argmax(curve))
        per[d] = {
            'threshold': float(thresholds[i]),
            'source_acc': float(curve[i]),
            'acc': float(np.asarray(tgt_curves[d])[i]),
        }
    return per


def _as_mapping(result: Mapping | WSOLResult) -> Mapping:
    if isinstance(result, WSOLResult):
        return {'cam_thresholds': result.cam_thresholds, 'curves': result.curves()}
    return result


def calibrated_accuracy(source: Mapping | WSOLResult, target: Mapping | WSOLResult) -> dict:
    """Box accuracy on ``target`` at the CAM thresholds that are best on ``source``.

    wsolevaluation picks the best threshold on the split it scores (an oracle); calibrating it on a held
    out split (``timm-adl eval --threshold-from val``) is the honest alternative. Both arguments are
    ``compute()`` results, of :class:`BoxEvaluator` or of :class:`WSOLEvaluator` (or their typed
    :class:`WSOLResult`, read as the latter's), over the same
    ``cam_thresholds``.

    Returns:
        For BoxEvaluator results: ``{'per_iou': {δ: {'threshold', 'source_acc', 'acc'}}, 'mean': %}``.
        For WSOLEvaluator results: ``max_box_acc`` and ``best_threshold`` (IoU 50, largest contour),
        ``max_box_acc_v2`` (mean) and ``best_thresholds_v2``, plus the per-IoU details. The thresholds
        are the source's; the accuracies are the target's.
    """
    source, target = _as_mapping(source), _as_mapping(target)
    thresholds = np.asarray(source['cam_thresholds'])
    if not np.array_equal(thresholds, np.asarray(target['cam_thresholds'])):
        raise ValueError('source and target results must use the same cam_thresholds')
    curves_s, curves_t = source['curves'], target['curves']
    if 'box_acc' in curves_s:  # WSOLEvaluator results
        v1 = _pick(thresholds, curves_s['box_acc'], curves_t['box_acc'])[50]
        v2 = _pick(thresholds, curves_s['box_acc_v2'], curves_t['box_acc_v2'])
        return {
            'max_box_acc': v1['acc'],
            'best_threshold': v1['threshold'],
            'max_box_acc_v2': float(np.average([p['acc'] for p in v2.values()])),
            'best_thresholds_v2': {d: p['threshold'] for d, p in v2.items()},
            'per_iou_v2': v2,
        }
    per = _pick(thresholds, curves_s, curves_t)
    return {'per_iou': per, 'mean': float(np.average([p['acc'] for p in per.values()]))}
