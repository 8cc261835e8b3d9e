"""The ADL paper's Figure 3 (image, heatmap, overlay with ground-truth and estimated boxes) for a trained run.

A model card draws it from the split its metrics were measured on, and ``timm-adl reproduce`` draws the CAM
and ADL models side by side on the same test images. The maps come from ``timm_adl.evaluate`` (the one
evaluation loop), so the picture shows exactly the maps the metrics scored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    'CamExamples',
    'cam_examples',
    'draw_figure3',
    'draw_run_figure',
    'estimated_boxes',
    'load_split_head',
]

FIGURE_IMAGES = 8


@dataclass(frozen=True)
class CamExamples:
    """The first images of a split with one model's ground-truth-class maps and their boxes."""

    images: torch.Tensor  # (N, 3, H, W), normalised with mean/std
    cams: torch.Tensor  # (N, H, W) in [0, 1]
    gt_boxes: list[torch.Tensor]  # N (K_i, 4)
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_split_head(
    data: Any, split: str, img_size: int, mean: Sequence[float], std: Sequence[float], n: int
) -> tuple:
    """One ``wsol_collate`` batch of the first ``n`` images of ``split`` (``data``: a recipe's DataConfig)."""
    from ..data import create_wsol_dataset, wsol_collate

    ds = create_wsol_dataset(
        data.name,
        data.root,
        split,
        is_training=False,
        img_size=img_size,
        mean=mean,
        std=std,
        metadata_root=data.metadata_root or None,
    )
    if len(ds) == 0:
        raise ValueError(f'split {split!r} of {data.root} has no images')
    if not ds.has_boxes:
        raise ValueError(f'split {split!r} of {data.root} has no boxes to draw')
    return wsol_collate([ds[i] for i in range(min(n, len(ds)))])


def cam_examples(
    model: nn.Module,
    batch: tuple,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    cam_method: str = 'cam',
    device: torch.device | str | None = None,
) -> CamExamples:
    """``model``'s maps of ``batch`` (a ``wsol_collate`` batch), through ``timm_adl.evaluate``."""
    from ..evaluation import evaluate

    kept: dict[str, torch.Tensor] = {}

    def keep(b) -> None:
        kept['cams'] = b.cams

    evaluate(model, [batch], cam_method=cam_method, device=device, on_batch=keep)
    return CamExamples(batch[0], kept['cams'], list(batch[2]), tuple(mean), tuple(std))


def estimated_boxes(cams: torch.Tensor, threshold: float) -> list[np.ndarray]:
    """Each map's box at ``threshold`` (largest contour, the paper's and MaxBoxAcc's box)."""
    from ..metrics import extract_boxes

    return [np.asarray(extract_boxes(c.numpy(), [threshold])[0]).reshape(-1, 4) for c in cams]


def draw_figure3(
    path: str | os.PathLike,
    examples: Sequence[CamExamples],
    thresholds: Sequence[float],
    titles: Sequence[str] | None = None,
) -> Path:
    """Write the grid of one or more models' maps on the same images (boxes at each model's threshold)."""
    from ..viz import cam_grid, save_png

    if len(examples) != len(thresholds):
        raise ValueError(f'got {len(examples)} sets of maps but {len(thresholds)} thresholds')
    first = examples[0]
    names = list(titles) if titles else [f'model {i + 1}' for i in range(len(examples))]
    notes = [f'{n}: green boxes at threshold {t:.2f}' for n, t in zip(names, thresholds, strict=True)]
    grid = cam_grid(
        first.images,
        [e.cams for e in examples],
        first.gt_boxes,
        [estimated_boxes(e.cams, t) for e, t in zip(examples, thresholds, strict=True)],
        titles=list(titles) if titles else None,
        mean=first.mean,
        std=first.std,
        with_legend=True,
        notes=notes,
    )
    return Path(save_png(grid, path))


def draw_run_figure(
    model: nn.Module,
    cfg: Any,
    split: str,
    path: str | os.PathLike,
    threshold: float | None = None,
    n: int = FIGURE_IMAGES,
    device: torch.device | str | None = None,
) -> Path:
    """Figure 3 of a trained run's model on the first ``n`` images of ``split`` of its recipe's data.

    ``cfg`` is the run's ``TrainConfig``: its data, image size, normalisation and CAM method are the
    evaluation's. Boxes are drawn at ``threshold`` (default the recipe's ``cam_threshold``, the paper's).
    Raises ``ValueError`` / ``OSError`` when the split cannot be read.
    """
    from ..train.engine import train_mean_std

    mean, std = train_mean_std(cfg, model)
    batch = load_split_head(cfg.data, split, cfg.img_size, mean, std, n)
    examples = cam_examples(model, batch, mean=mean, std=std, cam_method=cfg.cam_method, device=device)
    return draw_figure3(path, [examples], [cfg.cam_threshold if threshold is None else threshold])
