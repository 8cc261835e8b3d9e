"""WSOL metrics with the exact semantics of wsolevaluation (Choe et al., CVPR 2020), and the paper protocol.

* :class:`BoxEvaluator`: MaxBoxAcc per IoU threshold and their mean (MaxBoxAccV2 with
  ``multi_contour=True``), with the accuracy curves over the CAM thresholds.
* :class:`MaskEvaluator`: PxAP for mask ground truth (OpenImages).
* :class:`WSOLEvaluator`: Top-1 Clas, GT-known Loc, Top-1 Loc, MaxBoxAcc and MaxBoxAccV2 in one pass.
* :class:`WSOLResult`: the typed result of any of them (``result()``) and of ``timm_adl.evaluate``.
* :func:`calibrated_accuracy`: accuracy at the thresholds that are best on another split.
* :func:`extract_boxes`, :func:`iou_inclusive`, :func:`resize_boxes`: the reference's box semantics.
"""

from .box_evaluator import BoxEvaluator
from .boxes import default_cam_thresholds, extract_boxes, iou_inclusive, quantize_scoremaps, resize_boxes
from .mask_evaluator import MaskEvaluator
from .result import METRIC_NAMES, BoxAccuracy, WSOLResult
from .wsol_evaluator import WSOLEvaluator, calibrated_accuracy

__all__ = [
    'METRIC_NAMES',
    'BoxAccuracy',
    'BoxEvaluator',
    'MaskEvaluator',
    'WSOLEvaluator',
    'WSOLResult',
    'calibrated_accuracy',
    'default_cam_thresholds',
    'extract_boxes',
    'iou_inclusive',
    'quantize_scoremaps',
    'resize_boxes',
]
