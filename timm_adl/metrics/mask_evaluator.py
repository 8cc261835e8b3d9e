"""PxAP: pixel average precision of score maps against masks, wsolevaluation's ``MaskEvaluator``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._checks import as_scoremaps, check_thresholds
from ._streaming import all_reduce_counts
from .result import WSOLResult


def _masks(masks, shape: tuple, name: str) -> np.ndarray:
    arr = masks.detach().cpu().numpy() if hasattr(masks, 'detach') else np.asarray(masks)
    if arr.shape != shape:
        raise ValueError(f'{name} must have the shape of the score maps {shape}, got {tuple(arr.shape)}')
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in 'biuf' or not np.isin(arr, (0, 1)).all():
        raise ValueError(f'{name} must be boolean (or 0/1)')
    return arr.astype(bool)


class MaskEvaluator:
    """PxAP (the reference's ``MaskEvaluator``): the area under the pixel precision-recall curve.

    Score histograms of ground-truth foreground and background pixels are pooled over the whole data set
    (not averaged per image), with bins ``[τ_0, τ_1), ..., [τ_last, 1), [1, 2), [2, 3]``. At each edge,
    TP and FP count the pixels scoring at least the edge; PxAP is ``100 * Σ precision_i (recall_i -
    recall_{i-1})`` over the edges where a pixel is predicted (no interpolation).

    Args:
        cam_thresholds: histogram edges in [0, 1]; default ``np.arange(0, 1, 0.01)``.
    """

    def __init__(self, cam_thresholds: Iterable[float] | None = None):
        self.cam_thresholds = check_thresholds(cam_thresholds)
        if np.any(np.diff(self.cam_thresholds) <= 0):
            raise ValueError(
                'MaskEvaluator cam_thresholds must be strictly increasing (they are histogram edges)'
            )
        self.edges = np.append(self.cam_thresholds, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated map."""
        self.num_images = 0
        self.positive_hist = np.zeros(len(self.edges) - 1)
        self.negative_hist = np.zeros(len(self.edges) - 1)

    def merge(self, other: MaskEvaluator) -> MaskEvaluator:
        """Add ``other``'s pixels (scored on other images, e.g. another process's shard) to this one's."""
        if not np.array_equal(self.cam_thresholds, other.cam_thresholds):
            raise ValueError('cannot merge MaskEvaluators with different cam_thresholds')
        self.num_images += other.num_images
        self.positive_hist = self.positive_hist + other.positive_hist
        self.negative_hist = self.negative_hist + other.negative_hist
        return self

    def all_reduce(self, group=None) -> MaskEvaluator:
        """Sum the histograms over the ranks of ``group`` (see ``StreamingBoxEvaluator.all_reduce``)."""
        c = all_reduce_counts(
            {'images': np.float64(self.num_images), 'pos': self.positive_hist, 'neg': self.negative_hist},
            group,
        )
        self.num_images, self.positive_hist, self.negative_hist = int(c['images']), c['pos'], c['neg']
        return self

    def result(self) -> WSOLResult:
        """PxAP as a typed :class:`WSOLResult`."""
        return WSOLResult(self.num_images, pxap=self.compute()['pxap'])

    def update(self, scoremaps, gt_masks, ignore_masks=None) -> None:
        """Add a batch: score maps (N, H, W) in [0, 1], foreground masks (N, H, W) and optional ignore masks.

        Ignored pixels (OpenImages' ignore boxes) are neither positives nor negatives; a pixel in both
        masks counts as foreground, as the reference builds its ignore region as ``ignore - foreground``.
        """
        maps = as_scoremaps(scoremaps)
        fg = _masks(gt_masks, maps.shape, 'gt_masks')
        bg = ~fg
        if ignore_masks is not None:
            bg &= ~_masks(ignore_masks, maps.shape, 'ignore_masks')
        self.positive_hist += np.histogram(maps[fg], bins=self.edges)[0]
        self.negative_hist += np.histogram(maps[bg], bins=self.edges)[0]
        self.num_images += maps.shape[0]

    def compute(self) -> dict:
        """``pxap`` (percent), the ``precision`` and ``recall`` at each edge (highest edge first)."""
        num_pos = self.positive_hist.sum()
        tp = self.positive_hist[::-1].cumsum()
        fn = num_pos - tp
        fp = self.negative_hist[::-1].cumsum()
        if ((tp + fn) <= 0).all():
            raise ValueError('PxAP needs at least one ground-truth foreground pixel in the evaluated maps')
        if ((tp + fp) <= 0).all():
            raise ValueError('PxAP needs at least one evaluated pixel')
        predicted = (tp + fp) != 0
        with np.errstate(divide='ignore', invalid='ignore'):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        pxap = float((precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100)
        return {
            'pxap': pxap,
            'precision': precision,
            'recall': recall,
            'cam_thresholds': self.cam_thresholds.copy(),
            'num_images': self.num_images,
        }
