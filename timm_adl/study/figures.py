"""Figure 3 of the paper for one run: its first evaluation images, each as image | CAM heatmap | overlay
with the ground-truth boxes (red) and the estimate (green) at the run's MaxBoxAcc threshold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ['MIN_SIDE', 'FigureBatch', 'save_run_figure']

MIN_SIDE = 288  # small images (the synthetic set's 96 px) are enlarged to at least this for viewing


@dataclass
class FigureBatch:
    """The first images of an evaluation, as the evaluation loop saw them."""

    images: torch.Tensor  # (N, 3, H, W), normalised with mean/std
    cams: torch.Tensor  # (N, H, W) ground-truth-class maps in [0, 1]
    boxes: list  # N (K_i, 4) ground-truth boxes, x0 y0 x1 y1 in the image's pixels
    mean: Sequence[float]
    std: Sequence[float]


def _enlarge(batch: FigureBatch) -> tuple[torch.Tensor, torch.Tensor, list, int]:
    import torch.nn.functional as F

    scale = max(1, math.ceil(MIN_SIDE / min(batch.images.shape[-2:])))
    if scale == 1:
        return batch.images, batch.cams, list(batch.boxes), 1
    images = F.interpolate(batch.images.float(), scale_factor=scale, mode='bilinear', align_corners=False)
    cams = F.interpolate(
        batch.cams[:, None].float(), scale_factor=scale, mode='bilinear', align_corners=False
    )
    return images, cams[:, 0].clamp(0, 1), list(batch.boxes), scale


def save_run_figure(batch: FigureBatch, threshold: float | None, path: Path, title: str) -> Path:
    """Write the picture of ``batch`` to ``path`` (PNG, atomic)."""
    import numpy as np

    from ..metrics import extract_boxes
    from ..viz import cam_grid, save_png

    images, cams, boxes, scale = _enlarge(batch)
    gt = [torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 4) * scale for b in boxes]
    preds = None
    if threshold is not None:
        # boxes of the map at the run's own scale, then enlarged: what the metric scored
        preds = [
            np.asarray(extract_boxes(c.numpy(), [threshold]))[0].reshape(-1, 4) * scale for c in batch.cams
        ]
    note = (
        f'{title}: green boxes at the MaxBoxAcc threshold {threshold:.2f}' if threshold is not None else title
    )
    grid = cam_grid(
        images,
        cams,
        gt,
        preds,
        titles=[title],
        mean=batch.mean,
        std=batch.std,
        with_legend=True,
        notes=[note],
    )
    save_png(grid, path)
    return path
