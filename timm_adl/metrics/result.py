"""One typed result for every WSOL evaluation: the same fields whichever evaluator or loop produced it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ['METRIC_NAMES', 'BoxAccuracy', 'WSOLResult']

# The scalar metrics, in percent, in the order the papers' tables give them.
METRIC_NAMES = ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2', 'pxap')


@dataclass(frozen=True)
class BoxAccuracy:
    """BoxAcc curves over the CAM thresholds, one per IoU threshold (percent), of one contour variant."""

    multi_contour: bool
    cam_thresholds: np.ndarray
    curves: dict[float, np.ndarray]  # IoU (percent) -> (T,) BoxAcc (percent)

    @property
    def best(self) -> dict[float, float]:
        """MaxBoxAcc per IoU: each curve's maximum (each IoU picks its own CAM threshold)."""
        return {d: float(c.max()) for d, c in self.curves.items()}

    @property
    def best_thresholds(self) -> dict[float, float]:
        """The first CAM threshold reaching each maximum."""
        return {d: float(self.cam_thresholds[int(np.argmax(c))]) for d, c in self.curves.items()}

    @property
    def mean(self) -> float:
        """The mean over the IoU thresholds of their maxima (MaxBoxAccV2 with every contour, 30/50/70)."""
        return float(np.average(list(self.best.values())))


@dataclass(frozen=True)
class WSOLResult:
    """Every metric of one evaluation; what a data set or evaluator cannot give is ``None``.

    ``max_box_acc`` is MaxBoxAcc at IoU 50 of the largest contour (``box_acc``); ``max_box_acc_v2`` the
    mean over the IoU thresholds of the every-contour curves (``box_acc_v2``); ``gt_known_loc`` and
    ``top1_loc`` are at the fixed ``cam_threshold``. ``cam_method`` names the maps' method.
    """

    names: ClassVar[tuple[str, ...]] = METRIC_NAMES

    num_images: int
    top1_clas: float | None = None
    gt_known_loc: float | None = None
    top1_loc: float | None = None
    box_acc: BoxAccuracy | None = None
    box_acc_v2: BoxAccuracy | None = None
    pxap: float | None = None
    cam_threshold: float | None = None
    cam_method: str | None = None

    @property
    def max_box_acc(self) -> float | None:
        return None if self.box_acc is None else self.box_acc.best.get(50)

    @property
    def max_box_acc_v2(self) -> float | None:
        return None if self.box_acc_v2 is None else self.box_acc_v2.mean

    @property
    def best_threshold(self) -> float | None:
        """The CAM threshold of ``max_box_acc``."""
        return None if self.box_acc is None else self.box_acc.best_thresholds.get(50)

    @property
    def cam_thresholds(self) -> np.ndarray | None:
        curves = self.box_acc or self.box_acc_v2
        return None if curves is None else curves.cam_thresholds

    def metrics(self) -> dict[str, float]:
        """The scalar metrics this result has, by their names in :data:`METRIC_NAMES` (percent)."""
        out = {}
        for name in self.names:
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        return out

    def replace(self, **changes: Any) -> WSOLResult:
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """The metrics, then MaxBoxAccV2 per IoU and the best CAM thresholds: what a report prints."""
        out: dict[str, Any] = self.metrics()
        if self.box_acc_v2 is not None:
            for d, v in self.box_acc_v2.best.items():
                out[f'max_box_acc_v2@{_iou_key(d)}'] = v
        if self.best_threshold is not None:
            out['best_threshold'] = self.best_threshold
        if self.box_acc_v2 is not None:
            out['best_thresholds_v2'] = {_iou_key(d): t for d, t in self.box_acc_v2.best_thresholds.items()}
        return out

    def curves(self) -> dict[str, dict[float, np.ndarray]]:
        """``{'box_acc': {50: (T,)}, 'box_acc_v2': {δ: (T,)}}`` (the curves this result has)."""
        out = {}
        if self.box_acc is not None:
            out['box_acc'] = dict(self.box_acc.curves)
        if self.box_acc_v2 is not None:
            out['box_acc_v2'] = dict(self.box_acc_v2.curves)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain floats and lists, IoU keys as strings, NaN as None."""
        out: dict[str, Any] = {
            'num_images': self.num_images,
            'cam_method': self.cam_method,
            'cam_threshold': self.cam_threshold,
            'metrics': self.summary(),
        }
        if self.cam_thresholds is not None:
            out['curves'] = {'cam_thresholds': self.cam_thresholds, **self.curves()}
        return _jsonable(out)


def _iou_key(d: float) -> str:
    return str(int(d)) if float(d).is_integer() else str(d)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            (_iou_key(k) if isinstance(k, (int, float)) else str(k)): _jsonable(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
