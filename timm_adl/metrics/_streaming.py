"""The streaming base of the box evaluators: settings, worker threads, counters, merging across processes.

An evaluator's whole state is a set of counters (images, hits per CAM threshold, ...): sums over images.
So two evaluators over disjoint images merge by adding them, and ``torch.distributed`` ranks that each
scored a shard of a split reach the one-process numbers exactly with a sum all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._checks import check_gt_boxes, check_iou_thresholds, check_thresholds
from ._workers import BoxWorkers, check_num_threads

__all__ = ['StreamingBoxEvaluator', 'all_reduce_counts']


class StreamingBoxEvaluator:
    """Settings, worker plumbing and summable counters shared by ``BoxEvaluator`` and ``WSOLEvaluator``.

    Subclasses name their counters and shapes in :meth:`_counter_shapes`; ``self.counts`` holds them as
    float64 arrays (exact for counts below 2**53), ``num_images`` included.
    """

    def __init__(
        self,
        cam_thresholds: Iterable[float] | None,
        iou_thresholds: Sequence[float],
        gt_box_mode: str,
        num_threads: int | None,
    ):
        self.cam_thresholds = check_thresholds(cam_thresholds)
        self.num_threads = check_num_threads(num_threads)
        self._workers = BoxWorkers(self.num_threads)
        self.iou_thresholds = check_iou_thresholds(iou_thresholds)
        check_gt_boxes([], 0, gt_box_mode)
        self.gt_box_mode = gt_box_mode

    def _counter_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _settings(self) -> tuple:
        """What two evaluators must share to be merged."""
        return (type(self), self.cam_thresholds.tolist(), self.iou_thresholds, self.gt_box_mode)

    @property
    def num_images(self) -> int:
        self._workers.wait()
        return int(self.counts['images'][()])

    def __getstate__(self) -> dict:  # a copy or a pickle holds every submitted batch
        self._workers.wait()
        return self.__dict__.copy()

    def reset(self) -> None:
        """Forget every accumulated batch (pending work is dropped)."""
        self._workers.discard()
        shapes = {'images': (), **self._counter_shapes()}
        self.counts = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}

    def _check_mergeable(self, other: StreamingBoxEvaluator) -> None:
        if self._settings() != other._settings():
            raise ValueError(
                f'cannot merge {type(other).__name__} into {type(self).__name__}: their settings differ '
                '(type, cam_thresholds, iou_thresholds, gt_box_mode and the rest must be equal)'
            )

    def merge(self, other: StreamingBoxEvaluator) -> StreamingBoxEvaluator:
        """Add ``other``'s images (scored on other data, e.g. another process's shard) to this one's."""
        self._check_mergeable(other)
        self._workers.wait()
        other._workers.wait()
        for k, v in other.counts.items():
            self.counts[k] = self.counts[k] + v
        return self

    def all_reduce(self, group=None) -> StreamingBoxEvaluator:
        """Sum the counters over the ranks of ``group`` (default: the whole job): afterwards every rank
        holds the evaluation of every rank's images. A no-op outside an initialised process group."""
        self._workers.wait()
        self.counts = all_reduce_counts(self.counts, group)
        return self


def all_reduce_counts(counts: dict[str, np.ndarray], group=None) -> dict[str, np.ndarray]:
    """``counts`` summed over the ranks of ``group`` in one all-reduce (float64: exact below 2**53);
    ``counts`` itself outside an initialised process group or in a group of one."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return counts
    keys = sorted(counts)
    flat = np.concatenate([np.asarray(counts[k], dtype=np.float64).reshape(-1) for k in keys])
    on_gpu = dist.get_backend(group) == 'nccl'
    t = torch.from_numpy(flat).to(torch.device('cuda', torch.cuda.current_device()) if on_gpu else 'cpu')
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    summed = t.cpu().numpy()
    out, start = {}, 0
    for k in keys:
        shape = np.shape(counts[k])
        size = int(np.prod(shape))
        out[k] = summed[start : start + size].reshape(shape).copy()
        start += size
    return out
