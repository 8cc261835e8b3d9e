"""The one evaluation loop: model -> CAMs -> boxes -> metrics, for ``timm-adl eval``, the trainer, the demo.

``evaluate(model, loader)`` runs the model over a loader of WSOL batches (``wsol_collate``: images, labels,
boxes[, masks, ignore masks]), computes the CAMs with the chosen method, feeds the streaming evaluators
and returns one :class:`~timm_adl.metrics.WSOLResult`. Under ``torch.distributed`` each rank passes its
own shard (``ShardSampler``: no image twice) and the evaluators' counters are summed, so every rank gets
the numbers one process would get on the whole split.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import BoxEvaluator, MaskEvaluator, WSOLEvaluator, WSOLResult
from .metrics._checks import ImageError

__all__ = ['EvalBatch', 'cam_methods', 'check_cam_method', 'evaluate', 'evaluate_scoremaps']


def cam_methods() -> tuple[str, ...]:
    """The CAM methods ``compute_cams`` offers (``timm_adl.cam.CAM_METHODS``)."""
    from .cam import CAM_METHODS

    return CAM_METHODS


def check_cam_method(method: str) -> str:
    """``method`` if ``compute_cams`` knows it, else one line naming the valid ones."""
    valid = cam_methods()
    if method not in valid:
        close = difflib.get_close_matches(str(method), valid, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ValueError(f'CAM method must be one of {", ".join(valid)}; got {method!r}{hint}')
    return method


@dataclass
class EvalBatch:
    """What ``on_batch`` callbacks see: the batch, where it starts in the loader, its maps and CAM result."""

    start: int
    images: torch.Tensor
    labels: torch.Tensor
    boxes: list
    cams: torch.Tensor  # (N, H, W) ground-truth-class maps on the CPU, float32, in [0, 1]
    cam_result: Any = None  # the CamResult (None for saved score maps)


class _Evaluators:
    """The box and mask evaluators a split needs, fed batch by batch, merged across ranks at the end."""

    def __init__(
        self,
        *,
        with_model: bool,
        has_boxes: bool,
        cam_threshold: float,
        cam_thresholds,
        iou_thresholds,
        gt_box_mode,
    ):
        self.has_boxes = has_boxes
        kw = dict(cam_thresholds=cam_thresholds, gt_box_mode=gt_box_mode)
        self.wsol = self.maps = None
        if with_model:
            self.wsol = WSOLEvaluator(cam_threshold=cam_threshold, iou_thresholds=iou_thresholds, **kw)
        else:  # score maps only: no predictions, so the box metrics of the ground-truth-class maps
            self.maps = {
                'v1': BoxEvaluator(iou_thresholds=(50,), multi_contour=False, **kw),
                'v2': BoxEvaluator(iou_thresholds=iou_thresholds, multi_contour=True, **kw),
                'fixed': BoxEvaluator(
                    cam_thresholds=[cam_threshold], iou_thresholds=(50,), gt_box_mode=gt_box_mode
                ),
            }
        self.mask: MaskEvaluator | None = None
        self.mask_thresholds = cam_thresholds
        self.seen_boxes = False
        self.top1 = np.zeros(2)  # [right predictions, images]: Top-1 Clas where no box evaluator counts it

    def update(self, batch: Sequence, cams: torch.Tensor, cam_result) -> None:
        boxes = batch[2]
        if cam_result is not None:
            self.top1 += (int((cam_result.top1.cpu() == batch[1]).sum()), len(batch[1]))
        if self.has_boxes:
            self.seen_boxes = True
            if self.wsol is not None:
                r = cam_result
                self.wsol.update(cams, r.cams_top1.float().cpu(), boxes, r.logits.float().cpu(), batch[1])
            else:
                for ev in self.maps.values():
                    ev.update(cams, boxes)
        if len(batch) >= 5:
            if self.mask is None:
                self.mask = MaskEvaluator(cam_thresholds=self.mask_thresholds)
            self.mask.update(cams, batch[3], batch[4])

    def all_reduce(self) -> None:
        from .metrics._streaming import all_reduce_counts

        self.top1 = all_reduce_counts({'top1': self.top1})['top1']
        for ev in [self.wsol, *(self.maps or {}).values(), self.mask]:
            if ev is not None:
                ev.all_reduce()

    def result(self, cam_method: str | None) -> WSOLResult:
        if self.wsol is not None and self.seen_boxes:
            out = self.wsol.result()
        elif self.maps is not None and self.seen_boxes:
            v1, v2, fixed = (self.maps[k].result() for k in ('v1', 'v2', 'fixed'))
            out = WSOLResult(
                v1.num_images,
                gt_known_loc=fixed.max_box_acc,
                box_acc=v1.box_acc,
                box_acc_v2=v2.box_acc_v2,
                cam_threshold=self.maps['fixed'].cam_thresholds[0],
            )
        else:
            out = WSOLResult(0)
        if self.mask is not None:
            out = out.replace(num_images=self.mask.num_images, pxap=self.mask.result().pxap)
        if out.top1_clas is None and self.top1[1] > 0:
            out = out.replace(top1_clas=float(self.top1[0]) * 100.0 / float(self.top1[1]))
        return out.replace(cam_method=cam_method)


def _sum_over_ranks(loader: Iterable, all_reduce: bool | None) -> bool:
    """Whether to sum the counts over the ranks: as asked, else when the loader reads a shard
    (``ShardSampler``) in an initialised process group of several ranks."""
    import torch.distributed as dist

    from .data import ShardSampler

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    if all_reduce is not None:
        return all_reduce
    return isinstance(getattr(loader, 'sampler', None), ShardSampler)


def _named(err: ValueError, start: int, image_ids: Sequence[str] | None) -> ValueError:
    """``err`` naming the image (its id where the loader's order is known, else its place in the loader)."""
    if not isinstance(err, ImageError):
        return err
    k = start + err.index
    name = repr(image_ids[k]) if image_ids is not None and k < len(image_ids) else f'number {k}'
    return ValueError(f'image {name}: {err}')


def _bar(loader: Iterable, label: str | None) -> Iterable:
    if label is None:
        return loader
    import sys

    from tqdm import tqdm

    return tqdm(loader, desc=label, unit='batch', disable=None, file=sys.stderr)


def _has_boxes(loader: Iterable) -> bool:
    """Whether the loader's data set has boxes (mask data sets give none: PxAP only); True if unknown."""
    return bool(getattr(getattr(loader, 'dataset', None), 'has_boxes', True))


def _image_ids(loader: Iterable) -> Sequence[str] | None:
    """The data set's image ids when the loader goes through it in order (not sharded, not shuffled)."""
    from torch.utils.data import SequentialSampler

    sampler = getattr(loader, 'sampler', None)
    ids = getattr(getattr(loader, 'dataset', None), 'image_ids', None)
    return ids if isinstance(sampler, SequentialSampler) else None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    cam_method: str = 'cam',
    cam_threshold: float = 0.2,
    cam_thresholds: Iterable[float] | None = None,
    iou_thresholds: Sequence[float] = (30, 50, 70),
    gt_box_mode: str = 'all',
    align: str = 'reference',
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    on_batch: Callable[[EvalBatch], None] | None = None,
    progress: str | None = None,
    all_reduce: bool | None = None,
) -> WSOLResult:
    """Every WSOL metric of ``model``'s CAMs on ``loader`` (percent), as one :class:`WSOLResult`.

    Args:
        model: a classifier ``compute_cams`` handles; run in eval mode (its mode is restored after).
        loader: batches of ``wsol_collate`` (images, labels, boxes[, masks, ignore masks]). Under
            ``torch.distributed`` each rank gives its own shard (``ShardSampler``); the counts are summed
            over the ranks, so every rank returns the whole split's numbers.
        cam_method: one of ``timm_adl.cam.CAM_METHODS`` (default ``'cam'``); the result records it.
        cam_threshold: the paper protocol's fixed CAM threshold (GT-known Loc, Top-1 Loc).
        cam_thresholds: the fair protocol's grid (default ``np.arange(0, 1, 0.01)``).
        iou_thresholds: MaxBoxAccV2's IoU thresholds, in percent.
        gt_box_mode: ``'all'`` ground-truth boxes, or the ``'first'`` of each image.
        align: CAM resize convention of ``compute_cams``.
        device, amp_dtype, channels_last: where and how the forward pass runs.
        on_batch: called with an :class:`EvalBatch` after each batch (pictures, saved maps, diagnostics).
        progress: a label: show a progress bar on stderr (off when stderr is not a terminal).
        all_reduce: sum the counts over the ``torch.distributed`` ranks (every rank must call this);
            default: when the loader's sampler is a ``ShardSampler`` and a process group is initialised.
    """
    from .cam import compute_cams

    check_cam_method(cam_method)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    evs = _Evaluators(
        with_model=True,
        has_boxes=_has_boxes(loader),
        cam_threshold=cam_threshold,
        cam_thresholds=cam_thresholds,
        iou_thresholds=iou_thresholds,
        gt_box_mode=gt_box_mode,
    )
    ids = _image_ids(loader)
    was_training = model.training
    model.eval()
    start = 0
    try:
        for batch in _bar(loader, progress):
            images = batch[0].to(device, non_blocking=True)
            if channels_last and device.type == 'cuda':
                images = images.contiguous(memory_format=torch.channels_last)
            labels = batch[1].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                res = compute_cams(model, images, labels, align=align, method=cam_method)
            cams = res.cams_gt.float().cpu()
            try:
                evs.update(batch, cams, res)
            except ValueError as err:
                raise _named(err, start, ids) from None
            if on_batch is not None:
                on_batch(EvalBatch(start, batch[0], batch[1], batch[2], cams, res))
            start += len(batch[0])
    finally:
        model.train(was_training)
    if _sum_over_ranks(loader, all_reduce):
        evs.all_reduce()
    return evs.result(cam_method)


def evaluate_scoremaps(
    loader: Iterable,
    scoremaps: Callable[[int, Sequence], torch.Tensor],
    *,
    cam_threshold: float = 0.2,
    cam_thresholds: Iterable[float] | None = None,
    iou_thresholds: Sequence[float] = (30, 50, 70),
    gt_box_mode: str = 'all',
    cam_method: str | None = None,
    on_batch: Callable[[EvalBatch], None] | None = None,
    progress: str | None = None,
    all_reduce: bool | None = None,
) -> WSOLResult:
    """:func:`evaluate` for score maps made elsewhere: ``scoremaps(start, batch)`` gives a batch's (N, H, W)
    maps. No predictions, so no Top-1 metrics; GT-known Loc, MaxBoxAcc, MaxBoxAccV2 and PxAP of the maps."""
    evs = _Evaluators(
        with_model=False,
        has_boxes=_has_boxes(loader),
        cam_threshold=cam_threshold,
        cam_thresholds=cam_thresholds,
        iou_thresholds=iou_thresholds,
        gt_box_mode=gt_box_mode,
    )
    ids = _image_ids(loader)
    start = 0
    for batch in _bar(loader, progress):
        cams = scoremaps(start, batch)
        try:
            evs.update(batch, cams, None)
        except ValueError as err:
            raise _named(err, start, ids) from None
        if on_batch is not None:
            on_batch(EvalBatch(start, batch[0], batch[1], batch[2], cams))
        start += len(batch[0])
    if _sum_over_ranks(loader, all_reduce):
        evs.all_reduce()
    return evs.result(cam_method)
