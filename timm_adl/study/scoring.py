"""Score one trained run on the study's split with both protocols, keeping its first maps for the figure.

The model comes from the one loader (``timm_adl.hub.load_model``): built from the run's ``config.yaml``
with ADL where the recipe put it, normalised as the run trained. The data set is the run's own (its
``data`` block), only the split differs, so a synthetic set and CUB go through the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .figures import FigureBatch

__all__ = ['RunScore', 'score_run']


@dataclass
class RunScore:
    metrics: dict[str, float]
    cam_threshold: float
    best_threshold: float | None
    cam_method: str
    num_images: int
    eval_seconds: float
    figure: FigureBatch | None


def score_run(
    weights: Path, split: str, device: str = 'auto', figure_images: int = 8, batch_size: int | None = None
) -> RunScore:
    """Metrics of ``weights`` (a run's weights file, its ``config.yaml`` beside it) on ``split``."""
    from ..data import create_wsol_dataset, create_wsol_loader
    from ..evaluation import evaluate
    from ..hub import load_model
    from ..train.preflight import resolve_device

    t0 = time.perf_counter()
    loaded = load_model(weights)
    cfg, model = loaded.run_config, loaded.model
    dev = resolve_device(device)
    model.to(dev)
    amp = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(cfg.amp) if dev.type == 'cuda' else None
    ds = create_wsol_dataset(
        cfg.data.name,
        cfg.data.root,
        split,
        is_training=False,
        img_size=loaded.img_size,
        mean=loaded.mean,
        std=loaded.std,
        metadata_root=cfg.data.metadata_root or None,
    )
    loader = create_wsol_loader(
        ds,
        batch_size or cfg.batch_size,
        is_training=False,
        num_workers=cfg.num_workers,
        pin_memory=dev.type == 'cuda',
    )
    keep: dict[str, FigureBatch] = {}

    def first_maps(b) -> None:
        if b.start == 0 and figure_images > 0:
            n = figure_images
            keep['fig'] = FigureBatch(
                b.images[:n].clone(), b.cams[:n].clone(), list(b.boxes[:n]), loaded.mean, loaded.std
            )

    result = evaluate(
        model,
        loader,
        cam_method=loaded.cam_method,
        cam_threshold=cfg.cam_threshold,
        device=dev,
        amp_dtype=amp,
        channels_last=cfg.channels_last,
        on_batch=first_maps,
    )
    metrics = result.metrics()
    return RunScore(
        metrics={
            k: float(metrics[k])
            for k in ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2')
            if k in metrics
        },
        cam_threshold=float(cfg.cam_threshold),
        best_threshold=None if result.best_threshold is None else float(result.best_threshold),
        cam_method=str(result.cam_method),
        num_images=len(ds),
        eval_seconds=time.perf_counter() - t0,
        figure=keep.get('fig'),
    )
