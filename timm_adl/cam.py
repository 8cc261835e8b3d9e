"""Class activation maps for timm classifiers: CAM (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017).

``method='cam'`` (default). Where the head is global-average-pool + linear, the maps are exactly the
wsolevaluation protocol's (``wsol/*.py`` ``return_cam`` and ``inference.py``): ``cam_k = mean_c(w[k, c] * F[c])``
on the last feature map (no ReLU, no bias), resized to the input size with bicubic interpolation
(:mod:`timm_adl.cam_resize`), then min-max normalised per image into [0, 1], NaN or constant maps becoming
all-zero maps. Any other head (a norm, a 1x1 conv + activation or an MLP after the pooling; a class token)
is applied per feature cell (:func:`timm_adl.cam_heads.dense_head_logits`): the map of class k is the head's
score of k for each cell, whose spatial mean is the real logit when the layers after the pooling are linear
and an approximation otherwise (:func:`timm_adl.cam_heads.dense_head_gap` measures it). Heads that pool with
a max have no per-cell decomposition and are refused (use ``'gradcam'``).

``method='gradcam'``: the feature map weighted per channel by the spatial mean of the class score's
gradient. Works for any differentiable head. The map is not rectified (no ReLU), like the reference's CAM:
the min-max normalisation makes the two identical on a GAP + linear head (the gradient of the score on
cell (i, j), channel c, is w[k, c] / hw), and the box thresholds then sweep the whole range either way.
For class-token models the map is the input of the last block (see
:func:`timm_adl.cam_heads.class_score_gradients`).

Token (N, L, C) and channels-last (N, h, w, C) features are mapped on their (h, w) grid (prefix tokens
dropped); see :mod:`timm_adl.cam_heads`. Geometry (``align='centered'``): :mod:`timm_adl.cam_geometry`.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .cam_geometry import CamGeometry, cam_geometry, cam_offset, format_cam_geometry
from .cam_heads import (
    _model_name,
    _unwrap,
    branch_layouts,
    check_timm_classifier,
    class_score_gradients,
    classifier_weights,
    combine_branch_maps,
    dense_head_branches,
    dense_head_logits,
    feature_layout,
    head_description,
    linear_classifier,
    max_pooled,
    pooled_token_source,
    pooled_tokens,
    to_grid,
)
from .cam_resize import ALIGNS, normalize_cams, resize_cams

__all__ = [
    'CAM_METHODS',
    'CamGeometry',
    'CamResult',
    'cam_geometry',
    'cam_offset',
    'classifier_weights',
    'compute_cams',
    'format_cam_geometry',
    'normalize_cams',
    'resize_cams',
]

CAM_METHODS: tuple[str, ...] = ('cam', 'gradcam')
_ALIGNS = ALIGNS


@dataclass
class CamResult:
    """Output of :func:`compute_cams` for a batch of N images.

    ``cams_*`` are float32 (N, H, W) in [0, 1] at the output size; ``raw_*`` are the un-normalised
    low-resolution maps (N, h, w): on a GAP + linear head with ``method='cam'`` exactly as the reference's
    ``return_cam`` gives them, else the per-cell class scores ('cam') or the gradient-weighted map ('gradcam').
    """

    logits: torch.Tensor  # (N, K)
    cams_gt: torch.Tensor | None  # (N, H, W), None when no labels were given
    cams_top1: torch.Tensor  # (N, H, W)
    top1: torch.Tensor  # (N,) predicted class
    raw_gt: torch.Tensor | None  # (N, h, w)
    raw_top1: torch.Tensor  # (N, h, w)
    method: str = 'cam'  # the CAM_METHODS entry that made the maps


def _gap_linear_error(model: nn.Module, diff: float, tol: float) -> ValueError:
    return ValueError(
        f'CAM needs a global-average-pool + linear head, but forward_head of model {_model_name(model)!r} '
        f'differs from get_classifier()(mean over H, W of forward_features) by {diff:.3g} (tolerance '
        f'{tol:.3g}); found: {head_description(model)}; a max-pooling head has no per-cell decomposition: '
        f"use method='gradcam'"
    )


def _gap_linear_difference(
    feats: torch.Tensor, logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[float, float] | None:
    """(|forward_head(F) - fc(mean_hw(F))|_max, tolerance) on this very batch, or None if shapes rule it out.

    Within tolerance, the CAM is the exact spatial decomposition of the logit (the reference's case).
    """
    if feats.ndim != 4 or feats.shape[1] != weight.shape[1]:
        return None
    if logits.ndim != 2 or logits.shape != (feats.shape[0], weight.shape[0]):
        return None
    pooled = feats.float().mean((2, 3))
    expect = pooled @ weight.float().t()
    if bias is not None:
        expect = expect + bias.float()
    diff = (expect - logits.float()).abs().max().item()
    low_precision = logits.dtype in (torch.float16, torch.bfloat16) or feats.dtype in (
        torch.float16,
        torch.bfloat16,
    )
    tol = (5e-2 if low_precision else 1e-3) * (1.0 + logits.float().abs().max().item())
    return diff, tol


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type without autocast
        return contextlib.nullcontext()


def _check_labels(labels: Any, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    labels = torch.as_tensor(labels, device=device)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f'labels must have shape ({n},), got {tuple(labels.shape)}')
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'labels must be integer class indices, got dtype {labels.dtype}')
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f'label {bad} is out of range for a model with {num_classes} classes')
    return labels.long()


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ValueError(f'{name}={value!r} is not one of {valid}{hint}')


def _classes(logits: torch.Tensor, labels: Any) -> torch.Tensor:
    """(N, 2) [ground truth, top-1] classes, or (N, 1) [top-1] without labels."""
    top1 = logits.argmax(1)
    if labels is None:
        return top1[:, None]
    labels = _check_labels(labels, logits.shape[0], logits.shape[1], logits.device)
    return torch.stack([labels, top1], 1)


def _reference_cams(feats: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The reference's (w[k].view(C, 1, 1) * F).mean(C), for all images and classes in one op."""
    return torch.einsum('nchw,ntc->nthw', feats.float(), weight.detach().float()[classes]) / feats.shape[1]


def _dense_maps(
    model: nn.Module, images: torch.Tensor, feats: Any, logits: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """'cam' on any head but GAP + linear: the head applied per cell (per branch, for a list of token
    sets; on the last block's tokens, for pooled-token models)."""
    input_hw = tuple(images.shape[-2:])
    if isinstance(feats, (list, tuple)):
        return dense_head_branches(model, list(feats), branch_layouts(model, feats, input_hw), classes)
    layout = feature_layout(model, feats, input_hw)
    if pooled_tokens(layout):
        found = pooled_token_source(model, images, layout.num_prefix_tokens + 1)
        if found is not None:
            feats, layout = found
    return dense_head_logits(model, feats, layout, logits, classes)


def _class_maps(
    model: nn.Module, images: torch.Tensor, feats: Any, logits: torch.Tensor, labels: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """'cam': (N, T, h, w) raw maps and the (N, T) classes; the reference's maps on a GAP + linear head."""
    if isinstance(feats, (list, tuple)):
        branch_layouts(model, feats, tuple(images.shape[-2:]))  # refuses what is no list of token sets
    else:
        layout = feature_layout(model, feats, tuple(images.shape[-2:]))
    classes = _classes(logits, labels)
    found = linear_classifier(model)
    gap = None
    if found is not None and not isinstance(feats, (list, tuple)) and layout.kind == 'NCHW':
        gap = _gap_linear_difference(feats, logits, *found)
        if gap is not None and gap[0] <= gap[1]:
            return _reference_cams(feats, found[0], classes), classes
    if max_pooled(model):
        raise _gap_linear_error(model, *(gap or (float('nan'), float('nan'))))
    try:
        raw = _dense_maps(model, images, feats, logits, classes)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"method='cam' cannot apply the head of model {_model_name(model)!r} to one feature cell at a "
            f"time ({first[:200]}); method='gradcam' needs only the head's gradients"
        ) from err
    return raw, classes


def _gradcam_maps(
    model: nn.Module, images: torch.Tensor, labels: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """'gradcam': logits, (N, T, h, w) maps and (N, T) classes (Selvaraju et al., without the ReLU).

    Multi-branch models: one map per branch on its own grid, summed on the finest grid."""
    res = class_score_gradients(model, images, lambda logits: _classes(logits, labels))
    with _no_autocast(images.device.type):
        maps = []
        for b, (fmap, layout) in enumerate(zip(res.fmaps, res.layouts, strict=True)):
            grid = to_grid(fmap, layout).float()
            weights = torch.stack([to_grid(g[b], layout).float().mean((2, 3)) for g in res.grads], 1)  # N,T,C
            maps.append(torch.einsum('nchw,ntc->nthw', grid, weights))
        raw = combine_branch_maps(maps)
    return res.logits, raw, res.classes


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    method: str = 'cam',
    output_size: tuple[int, int] | int | None = None,
    align: str = 'reference',
    geometry: CamGeometry | None = None,
) -> CamResult:
    """CAMs for the ground-truth class (if ``labels``) and the top-1 class, from one forward pass.

    Args:
        model: a timm classifier (``forward_features``/``forward_head``/``get_classifier``, num_classes >= 1).
            The model's mode is not changed: call ``model.eval()`` first, as the reference does.
        images: (N, 3, H, W) normalised input batch.
        labels: (N,) ground-truth classes, or None for top-1 CAMs only.
        method: one of :data:`CAM_METHODS`: 'cam' (the reference's maps on a GAP + linear head, the head
            applied per cell otherwise) or 'gradcam' (gradient-weighted features, any differentiable head).
        output_size: (H, W) of the returned maps; default the input size (the reference's choice).
        align: 'reference' (OpenCV INTER_CUBIC resize, the wsolevaluation protocol) or 'centered' (cells
            resampled onto their measured receptive-field centres, see :func:`cam_geometry`).
        geometry: a :class:`CamGeometry` for 'centered'; measured once per model and input size (and
            cached) when not given.
    """
    _check_choice('method', method, CAM_METHODS)
    _check_choice('align', align, _ALIGNS)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            f'images must be a (N, C, H, W) tensor, got {getattr(images, "shape", type(images))}'
        )
    model = _unwrap(model)
    check_timm_classifier(model)
    in_h, in_w = images.shape[-2:]
    if output_size is None:
        output_size = (in_h, in_w)
    elif isinstance(output_size, int):
        output_size = (output_size, output_size)
    if method == 'gradcam':
        logits, raw, classes = _gradcam_maps(model, images, labels)
    else:
        with torch.no_grad():
            feats = model.forward_features(images)
            logits = model.forward_head(feats)
    # the CAM arithmetic in full precision even inside the caller's autocast (which would run it in bf16)
    with torch.no_grad(), _no_autocast(images.device.type):
        if method == 'cam':
            raw, classes = _class_maps(model, images, feats, logits, labels)
        if align == 'centered':
            if geometry is None:
                geometry = cam_geometry(model, (images.shape[1], in_h, in_w))
            elif tuple(geometry.input_size) != (in_h, in_w):
                raise ValueError(
                    f'geometry was measured at input size {geometry.input_size}, the images are {(in_h, in_w)}'
                )
        cams = normalize_cams(resize_cams(raw, output_size, align=align, geometry=geometry).float())
    has_gt = labels is not None
    return CamResult(
        logits=logits,
        cams_gt=cams[:, 0] if has_gt else None,
        cams_top1=cams[:, -1],
        top1=classes[:, -1],
        raw_gt=raw[:, 0] if has_gt else None,
        raw_top1=raw[:, -1],
        method=method,
    )
