"""Class activation maps (CAM, Zhou et al. 2016) for timm classifiers with a global-average-pool + linear head.

The default reproduces the wsolevaluation protocol (``wsol/*.py`` ``return_cam`` and ``inference.py``):
``cam_k = mean_c(w[k, c] * F[c])`` on the last feature map (no ReLU, no bias), resized to the input size
with bicubic interpolation (OpenCV ``INTER_CUBIC``: Keys kernel, a = -0.75, half-pixel centres, replicated
border), then min-max normalised per image into [0, 1], NaN or constant maps becoming all-zero maps.

The resize is done here as two small matrix products (separable cubic weights, float64) on the model's
device, for a whole batch at once. Measured against ``cv2.resize(..., INTER_CUBIC)`` on the same float32
maps (200 random maps per size, 7/14/28 -> 224, 12 -> 96, 8/17 -> 299, 3 -> 64): at most 4.1e-7 of a map's
range apart (OpenCV's own result moves by up to 2e-7 at 7/14 -> 224 and 1.2e-6 at 8 -> 299 when its IPP
path is switched off, so there is no single exact value to match bit for bit; torch's own ``F.interpolate(mode='bicubic')`` is 1.6e-7 apart at integer scales, 1.2e-6 at 299);
after normalisation at most 6e-7 apart, so about 1e-5 of the 8-bit quantised pixels the box extraction
sees move by one level. ``tests/test_cam.py::test_resize_matches_cv2_inter_cubic`` checks this.

Geometry: a plain resize assumes feature cell ``i`` is centred on input pixel ``(i + 0.5) * H / h - 0.5``.
The true centre of its receptive field depends on the paddings of the strided layers (a 3x3 stride-2
conv with padding 1 centres cell ``i`` on pixel ``2 i``). :func:`cam_geometry` measures the true centres
numerically and ``align='centered'`` resamples the CAM so that each cell lands on its measured centre.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

__all__ = [
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

_ALIGNS = ('reference', 'centered')
_CUBIC_A = -0.75  # OpenCV's and PyTorch's bicubic kernel parameter


@dataclass
class CamResult:
    """Output of :func:`compute_cams` for a batch of N images.

    ``cams_*`` are float32 (N, H, W) in [0, 1] at the output size; ``raw_*`` are the un-normalised
    low-resolution maps (N, h, w) exactly as the reference's ``return_cam`` gives them.
    """

    logits: torch.Tensor  # (N, K)
    cams_gt: torch.Tensor | None  # (N, H, W), None when no labels were given
    cams_top1: torch.Tensor  # (N, H, W)
    top1: torch.Tensor  # (N,) predicted class
    raw_gt: torch.Tensor | None  # (N, h, w)
    raw_top1: torch.Tensor  # (N, h, w)


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return cfg.get('architecture') or type(model).__name__


def _head_description(model: nn.Module) -> str:
    """Name the head-like top-level modules, so an error says what was found instead of GAP + linear."""
    keys = ('global_pool', 'head', 'fc', 'classifier', 'logits', 'last_linear')
    found = []
    for name, mod in model.named_children():
        if any(k in name.lower() for k in keys):
            desc = type(mod).__name__
            pool_type = getattr(mod, 'pool_type', None)
            if pool_type is not None:
                desc += f'(pool_type={pool_type!r})'
            found.append(f'{name}={desc}')
    return ', '.join(found) or 'no head-like modules'


def _unwrap(model: nn.Module) -> nn.Module:
    """The timm model inside a (Distributed)DataParallel wrapper, which hides forward_features & co."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def classifier_weights(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (K, C) weight and (K,) bias of the model's linear classifier (``get_classifier()``).

    Accepts ``nn.Linear`` and 1x1 ``nn.Conv2d`` classifiers; anything else raises ``ValueError``.
    """
    model = _unwrap(model)
    name = _model_name(model)
    missing = [m for m in ('forward_features', 'forward_head', 'get_classifier') if not hasattr(model, m)]
    if missing:
        raise ValueError(
            f'CAM needs a timm classifier with forward_features/forward_head/get_classifier; '
            f'model {name!r} has no {", ".join(missing)}'
        )
    fc = model.get_classifier()
    if isinstance(fc, nn.Linear):
        return fc.weight, fc.bias
    if isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1:
        return fc.weight.flatten(1), fc.bias
    raise ValueError(
        f'CAM needs a global-average-pool + linear head, but get_classifier() of model {name!r} is '
        f'{type(fc).__name__} (num_classes={getattr(model, "num_classes", "?")}); expected nn.Linear '
        f'or a 1x1 nn.Conv2d'
    )


def _check_gap_linear(
    model: nn.Module,
    feats: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> None:
    """Verify numerically that ``forward_head(F) == fc(mean_hw(F))`` on this very batch.

    This is what makes the CAM the exact spatial decomposition of the logit; it catches max/avgmax
    pooling, MLP or norm layers in the head, and models whose features are not (N, C, h, w).
    """
    name = _model_name(model)
    if feats.ndim != 4 or feats.shape[1] != weight.shape[1]:
        raise ValueError(
            f'CAM needs forward_features to return (N, C, h, w) with C={weight.shape[1]} (the classifier '
            f'input); model {name!r} returned shape {tuple(feats.shape)}'
        )
    if logits.ndim != 2 or logits.shape != (feats.shape[0], weight.shape[0]):
        raise ValueError(
            f'CAM needs forward_head to return (N, K) logits with K={weight.shape[0]}; model {name!r} '
            f'returned shape {tuple(logits.shape)}'
        )
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
    if not diff <= tol:
        raise ValueError(
            f'CAM needs a global-average-pool + linear head, but forward_head of model {name!r} differs from '
            f'get_classifier()(mean over H, W of forward_features) by {diff:.3g} (tolerance {tol:.3g}); '
            f'found: {_head_description(model)}'
        )


# ----------------------------------------------------------------------------------------------------
# resizing


def _cubic_weights(d: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.75 (OpenCV INTER_CUBIC, torch 'bicubic')."""
    a = _CUBIC_A
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _cubic_matrix(coords: np.ndarray, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix sampling a length-n_in signal at fractional ``coords`` (replicated border)."""
    coords = np.asarray(coords, dtype=np.float64)
    base = np.floor(coords)
    mat = np.zeros((coords.size, n_in), dtype=np.float64)
    rows = np.arange(coords.size)
    for k in range(-1, 3):
        tap = base + k
        idx = np.clip(tap, 0, n_in - 1).astype(np.int64)
        np.add.at(mat, (rows, idx), _cubic_weights(coords - tap))
    return mat


@functools.lru_cache(maxsize=64)
def _resize_matrix(
    n_in: int, n_out: int, input_len: int, stride: float | None, origin: float | None
) -> torch.Tensor:
    """(n_out, n_in) float64 cubic resampling matrix (cached: the same sizes recur batch after batch)."""
    return torch.from_numpy(_cubic_matrix(_sample_coords(n_in, n_out, input_len, stride, origin), n_in))


def _sample_coords(
    n_in: int, n_out: int, input_len: int, stride: float | None, origin: float | None
) -> np.ndarray:
    """Feature-map coordinate sampled by each output pixel.

    ``stride is None``: the reference resize (half-pixel centres: cell i at pixel (i + 0.5) n_out/n_in - 0.5).
    Otherwise output pixel x is mapped to input pixel X (an input-size image rescaled to n_out) and cell
    coordinate (X - origin) / stride, so cell i lands on its measured receptive-field centre.
    """
    x = np.arange(n_out, dtype=np.float64)
    if stride is None:
        return (x + 0.5) * (n_in / n_out) - 0.5
    pix = (x + 0.5) * (input_len / n_out) - 0.5
    return (pix - origin) / stride


def resize_cams(
    maps: torch.Tensor,
    output_size: tuple[int, int],
    *,
    align: str = 'reference',
    geometry: CamGeometry | None = None,
) -> torch.Tensor:
    """Bicubic resize of (..., h, w) maps to (..., H, W) as two batched matrix products.

    ``align='reference'`` is OpenCV's INTER_CUBIC resize; ``align='centered'`` needs ``geometry`` (see
    :func:`cam_geometry`) and places each cell on its measured receptive-field centre.
    """
    if align not in _ALIGNS:
        raise ValueError(f'align={align!r} is not one of {_ALIGNS}')
    h, w = maps.shape[-2:]
    out_h, out_w = (int(s) for s in output_size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f'output_size must be positive, got {output_size!r}')
    if align == 'centered':
        if geometry is None:
            raise ValueError("align='centered' needs a CamGeometry (from cam_geometry(model, input_size))")
        if tuple(geometry.feature_size) != (h, w):
            raise ValueError(
                f'geometry was measured for a {geometry.feature_size} feature map, the maps are {(h, w)}; '
                f'measure it at this input size'
            )
        my = _resize_matrix(h, out_h, geometry.input_size[0], geometry.stride[0], geometry.origin[0])
        mx = _resize_matrix(w, out_w, geometry.input_size[1], geometry.stride[1], geometry.origin[1])
    else:
        my = _resize_matrix(h, out_h, out_h, None, None)
        mx = _resize_matrix(w, out_w, out_w, None, None)
    # float64: closest to OpenCV's float32 result, and immune to TF32 matmuls on GPUs (float32 on MPS)
    dtype = torch.float32 if maps.device.type == 'mps' else torch.float64
    my, mx = my.to(maps.device, dtype), mx.to(maps.device, dtype)
    return my @ (maps.to(dtype) @ mx.t())


def normalize_cams(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation of (..., H, W) into [0, 1]; maps with a NaN/inf or constant maps -> 0.

    Same arithmetic as the reference's ``normalize_scoremap`` (subtract the min, divide by the new max).
    The reference only tests NaN; an infinite value would give NaNs there, here it gives zeros too.
    """
    flat = maps.flatten(-2)
    if flat.shape[-1] == 0:
        return maps.clone()
    lo, hi = torch.aminmax(flat, dim=-1, keepdim=True)  # NaN anywhere makes both NaN
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi)) | (hi == lo)
    out = (flat - lo).div_(torch.where(bad, torch.ones_like(hi), hi - lo))
    if bad.any():
        out.masked_fill_(bad, 0.0)
    return out.reshape(maps.shape)


# ----------------------------------------------------------------------------------------------------
# CAMs


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


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    output_size: tuple[int, int] | int | None = None,
    align: str = 'reference',
    geometry: CamGeometry | None = None,
) -> CamResult:
    """CAMs for the ground-truth class (if ``labels``) and the top-1 class, from one forward pass.

    Args:
        model: a timm classifier whose head is global-average-pool + linear (checked numerically on
            this batch; anything else raises ``ValueError`` naming the model and the head found). The
            model's mode is not changed: call ``model.eval()`` first, as the reference does.
        images: (N, 3, H, W) normalised input batch.
        labels: (N,) ground-truth classes, or None for top-1 CAMs only.
        output_size: (H, W) of the returned maps; default the input size (the reference's choice).
        align: 'reference' (OpenCV INTER_CUBIC resize, the wsolevaluation protocol) or 'centered' (cells
            resampled onto their measured receptive-field centres, see :func:`cam_geometry`).
        geometry: a :class:`CamGeometry` for 'centered'; measured once per model and input size (and
            cached) when not given.
    """
    if align not in _ALIGNS:
        close = difflib.get_close_matches(str(align), _ALIGNS, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ValueError(f'align={align!r} is not one of {_ALIGNS}{hint}')
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            f'images must be a (N, C, H, W) tensor, got {getattr(images, "shape", type(images))}'
        )
    model = _unwrap(model)
    weight, bias = classifier_weights(model)
    in_h, in_w = images.shape[-2:]
    if output_size is None:
        output_size = (in_h, in_w)
    elif isinstance(output_size, int):
        output_size = (output_size, output_size)
    with torch.no_grad():
        feats = model.forward_features(images)
        logits = model.forward_head(feats)
    # the CAM arithmetic in full precision even inside the caller's autocast (which would run it in bf16)
    with torch.no_grad(), _no_autocast(feats.device.type):
        _check_gap_linear(model, feats, logits, weight, bias)
        n, c = feats.shape[:2]
        top1 = logits.argmax(1)
        if labels is not None:
            labels = _check_labels(labels, n, weight.shape[0], logits.device)
            classes = torch.stack([labels, top1], 1)
        else:
            classes = top1[:, None]
        # The reference's (w[k].view(C, 1, 1) * F).mean(C), for all images and both classes in one op.
        raw = torch.einsum('nchw,ntc->nthw', feats.float(), weight.detach().float()[classes]) / c
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
        top1=top1,
        raw_gt=raw[:, 0] if has_gt else None,
        raw_top1=raw[:, -1],
    )


# ----------------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class CamGeometry:
    """Where the feature cells' receptive fields are centred, in input pixels (pixel centres at integers).

    Cell ``i`` along an axis is centred on ``origin + stride * i``; the reference resize puts it on
    ``(i + 0.5) * input / feature - 0.5``. ``offset`` is resize position minus true centre, averaged
    over the cells: positive means the reference CAM is drawn down/right of its evidence.
    """

    input_size: tuple[int, int]  # (H, W)
    feature_size: tuple[int, int]  # (h, w)
    stride: tuple[float, float]  # (y, x) pixels per cell
    origin: tuple[float, float]  # (y, x) centre of cell (0, 0)
    method: str
    probe_size: tuple[int, int]  # (H, W) of the inputs the measurement used

    def centres(self, axis: int) -> np.ndarray:
        """True receptive-field centres of the cells along axis 0 (y) or 1 (x)."""
        return self.origin[axis] + self.stride[axis] * np.arange(self.feature_size[axis])

    def resize_centres(self, axis: int) -> np.ndarray:
        """Where the reference resize puts the cells along axis 0 (y) or 1 (x)."""
        n, size = self.feature_size[axis], self.input_size[axis]
        return (np.arange(n) + 0.5) * size / n - 0.5

    @property
    def offset(self) -> tuple[float, float]:
        """(dy, dx): mean over cells of (reference resize position - true centre), in input pixels."""
        return tuple(float(np.mean(self.resize_centres(a) - self.centres(a))) for a in (0, 1))

    @property
    def max_abs_offset(self) -> tuple[float, float]:
        return tuple(float(np.abs(self.resize_centres(a) - self.centres(a)).max()) for a in (0, 1))


class _ProbeMode(TorchFunctionMode):
    """Rewrites a few ops while a probe runs ``forward_features``.

    Always: ops that pool a 4-D map over all of H and W (squeeze-excitation, ECA, GC gates ...) are
    detached, since their gradient reaches every input pixel and would make every receptive field the
    whole image; the geometry wanted is that of the local (conv/pool) paths.
    With ``structural=True`` (support measurements): piecewise-linear activations with zero-gradient
    regions become the identity and max-pooling becomes average pooling over the same windows, so that
    a gradient's support is the full receptive field, not the part a given input happens to activate.
    """

    _GLOBAL = frozenset(
        {'mean', 'sum', 'amax', 'amin', 'max', 'min', 'std', 'var', 'logsumexp', 'norm', 'lp_pool2d'}
        | {'adaptive_avg_pool2d', 'adaptive_max_pool2d', 'avg_pool2d', 'max_pool2d'}
    )
    _PIECEWISE = frozenset(
        {
            'relu',
            'relu_',
            'relu6',
            'hardtanh',
            'hardtanh_',
            'hardswish',
            'hardsigmoid',
            'threshold',
            'threshold_',
        }
    )
    _MAXPOOL_ARGS = ('input', 'kernel_size', 'stride', 'padding', 'dilation', 'ceil_mode', 'return_indices')

    def __init__(self, structural: bool = False):
        super().__init__()
        self.structural = structural

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '')
        x = args[0] if args else kwargs.get('input')
        if self.structural and name in self._PIECEWISE and isinstance(x, torch.Tensor):
            return x
        if self.structural and name == 'max_pool2d':
            bound = dict(zip(self._MAXPOOL_ARGS, args, strict=False)) | kwargs
            stride = bound.get('stride') or bound['kernel_size']
            dilation = bound.get('dilation', 1)
            if not bound.get('return_indices') and dilation in (1, (1, 1), [1, 1]):
                out = func(*args, **kwargs)
                avg = torch.nn.functional.avg_pool2d(
                    bound['input'],
                    bound['kernel_size'],
                    stride,
                    bound.get('padding', 0),
                    bool(bound.get('ceil_mode')),
                )
                if avg.shape == out.shape:
                    return avg
                return out
        out = func(*args, **kwargs)
        if (
            name in self._GLOBAL
            and isinstance(x, torch.Tensor)
            and isinstance(out, torch.Tensor)
            and x.ndim == 4
            and x.shape[-2] * x.shape[-1] > 1
            and out.ndim in (2, 4)
            and out.shape[0] == x.shape[0]
            and (out.ndim == 2 or out.shape[-2:] == (1, 1))
        ):
            return out.detach()
        return out


def _randomized_copy(model: nn.Module) -> nn.Module:
    """A copy with fresh non-degenerate weights: the support of a gradient then follows the structure only.

    Trained or freshly initialised weights can hide paths (timm zero-initialises the last norm of each
    residual branch, so a new ResNet's gradients only see the shortcuts).
    """
    probe = copy.deepcopy(model).float()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * math.sqrt(1.0 / max(fan_in, 1)))
            elif name.endswith('bias'):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        for name, b in probe.named_buffers():
            if name.endswith('running_var'):
                b.fill_(1.0)
            elif name.endswith('running_mean'):
                b.zero_()
    return probe


class _TooSmall(Exception):
    """The probe's feature map lacks the cells a measurement needs along the measured axis."""

    def __init__(self, fsize: tuple[int, int]):
        super().__init__(fsize)
        self.fsize = fsize


def _probe_profile(
    model: nn.Module,
    in_chans: int,
    size: tuple[int, int],
    axis: int,
    cells: Callable[[int], list[int]],
    inputs: int = 1,
    structural: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """|d cell / d input| profiles along ``axis`` for the cells ``cells(feature_length)`` (the other axis
    at its central cell), from one forward and one backward.

    Sample j of the batch (each of ``inputs`` random inputs once per cell) back-propagates only its own
    cell; samples do not interact in eval mode. Returns the profiles (summed over channels, the other axis and
    the ``inputs`` repeats), the cells' indices and the feature-map size.
    """
    gen = torch.Generator().manual_seed(1)
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    k = len(cells(2))  # ``cells`` returns a fixed number of cells
    x = torch.randn((inputs, 1, in_chans, *size), generator=gen).expand(inputs, k, in_chans, *size)
    x = x.reshape(-1, in_chans, *size).to(device).requires_grad_(True)
    with torch.enable_grad(), _ProbeMode(structural):
        feats = model.forward_features(x)
    if feats.ndim != 4:
        raise ValueError(f'forward_features of {_model_name(model)!r} returned shape {tuple(feats.shape)}')
    fsize = (int(feats.shape[-2]), int(feats.shape[-1]))
    index = np.array(cells(fsize[axis]))
    if fsize[axis] < 2 or index.min() < 0 or index.max() >= fsize[axis]:
        raise _TooSmall(fsize)
    mid = [fsize[0] // 2, fsize[1] // 2]
    picked = []
    with torch.enable_grad():  # the picks too: a caller's no_grad (e.g. compute_cams) must not cut the graph
        for j in range(x.shape[0]):
            cell = list(mid)
            cell[axis] = int(index[j % len(index)])
            picked.append(feats[j, :, cell[0], cell[1]].sum())
        (grad,) = torch.autograd.grad(torch.stack(picked).sum(), x)
    prof = grad.detach().abs().double().sum(1).sum(2 - axis)  # (batch, length)
    prof = prof.reshape(inputs, len(index), -1).sum(0)
    return prof.cpu().numpy(), index, fsize


def _edge_cells(n: int) -> list[int]:
    return [0, n - 2, n - 1]


def _support_axis(
    probe: nn.Module, in_chans: int, size: tuple[int, int], axis: int, max_probe: int
) -> tuple[float, float, int, int]:
    """(stride, origin) of the receptive-field centres along ``axis``, the probe length used, and the
    number of cells along ``axis`` at ``size``.

    The support of cell i (input pixels with a non-zero gradient) spans ``[left(i), right(i)]``, both
    affine in i with slope = stride. The left edges are read on the last two cells and the right edge
    on the first one, so each field only has to fit on one side (about half of it in the probe); the
    centre line is the mean of the two edge lines. The probe grows along ``axis`` (in steps of 64 px,
    which keeps TF-'same' paddings as they are at ``size``) while an edge it needs touches the border;
    the other axis is thinned to save time when the model accepts it (the geometry along one axis does
    not depend on the other's size).
    """
    other = 1 - axis
    thins = sorted({min(size[other], t) for t in (32, 96)} | {size[other]})
    extra, n_cells = 0, None
    while True:
        shape = [0, 0]
        shape[axis], shape[other] = size[axis] + extra, thins[0]
        length = shape[axis]
        profiles = None
        try:
            profiles, index, fsize = _probe_profile(
                probe, in_chans, (shape[0], shape[1]), axis, _edge_cells, structural=True
            )
        except _TooSmall as err:
            fsize = err.fsize
        except (RuntimeError, ValueError) as err:
            if len(thins) > 1:
                thins.pop(0)
                continue
            raise ValueError(f'cannot probe {_model_name(probe)!r} at {shape[0]}x{shape[1]}: {err}') from err
        if n_cells is None:
            n_cells = fsize[axis]
        if profiles is not None:
            lefts, rights = {}, {}
            for i, prof in zip(index.tolist(), profiles, strict=True):
                nz = np.flatnonzero(prof > 0)
                if nz.size == 0:
                    raise ValueError(
                        f'no gradient reaches the input of {_model_name(probe)!r}; cannot measure'
                    )
                if nz[0] > 0:
                    lefts[i] = float(nz[0])
                if nz[-1] < length - 1:
                    rights[i] = float(nz[-1])
            a, b, first = int(index[-2]), int(index[-1]), int(index[0])
            if a in lefts and b in lefts and first in rights:
                stride = (lefts[b] - lefts[a]) / (b - a)
                origin = ((lefts[a] - stride * a) + (rights[first] - stride * first)) / 2
                return stride, origin, length, n_cells
        if length >= max_probe:
            raise ValueError(
                f'the receptive field of {_model_name(probe)!r} does not fit in {length} px along '
                f'{"y" if axis == 0 else "x"}; raise max_probe or use method="gradient"'
            )
        extra = min(max(2 * extra, 128), max_probe - size[axis])
        extra -= extra % 64


def cam_geometry(
    model: nn.Module,
    input_size: tuple[int, ...] = (3, 224, 224),
    *,
    method: str = 'support',
    max_probe: int = 2048,
) -> CamGeometry:
    """Measure where the last feature map's cells are centred in the input (cached per model and size).

    ``method='support'`` (default): the midpoint of each cell's receptive field, i.e. of the input pixels
    whose gradient is non-zero, on a copy of the model with random non-degenerate weights, ReLU-like
    activations as identity and max-pools as average pools (structure only, independent of training and
    of the input), probed on inputs grown as needed up to ``max_probe`` px. ``method='gradient'``:
    the centroid of |d cell / d input| of the model as it is (its effective receptive field, weights
    included) at ``input_size`` for random inputs; it can differ from the support where branches disagree
    (e.g. ResNet-D 'avg_down' shortcuts) and is noisy on untrained models. Paths through global pooling
    (squeeze-excitation and similar gates) are cut in both. Run on the model's device (fast on a GPU).
    """
    if method not in ('support', 'gradient'):
        close = difflib.get_close_matches(str(method), ('support', 'gradient'), n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ValueError(f"method={method!r} is not one of ('support', 'gradient'){hint}")
    if len(input_size) == 2:
        input_size = (3, *input_size)
    in_chans, height, width = (int(s) for s in input_size)
    model = _unwrap(model)
    key = (method, in_chans, height, width, max_probe)
    per_model = _GEOMETRY_CACHE.get(model)
    if per_model is not None and key in per_model:
        return per_model[key]
    classifier_weights(model)  # a clear error for non-timm models before any work

    modes = {m: m.training for m in model.modules()}
    probe = _randomized_copy(model) if method == 'support' else model
    probe.eval()
    stride, origin, probe_size, feat_size = [0.0, 0.0], [0.0, 0.0], [height, width], [0, 0]
    try:
        for axis in (0, 1):
            if method == 'gradient':
                try:
                    profiles, index, fsize = _probe_profile(
                        probe, in_chans, (height, width), axis, lambda n: [n // 2 - 1, n // 2, n // 2 + 1], 2
                    )
                except _TooSmall:
                    raise ValueError(
                        f'the feature map of {_model_name(model)!r} at {height}x{width} has fewer than 3 '
                        f'cells along {"y" if axis == 0 else "x"}: measure at a larger input size'
                    ) from None
                pos = np.arange((height, width)[axis], dtype=np.float64)
                centres = (profiles * pos).sum(1) / profiles.sum(1)
                # least-squares line: centre = origin + stride * index
                stride[axis], origin[axis] = (
                    float(v) for v in np.polyfit(index.astype(np.float64), centres, 1)
                )
                feat_size[axis] = fsize[axis]
            else:
                stride[axis], origin[axis], probe_size[axis], feat_size[axis] = _support_axis(
                    probe, in_chans, (height, width), axis, max_probe
                )
    finally:
        for m, mode in modes.items():
            m.training = mode
    geom = CamGeometry(
        input_size=(height, width),
        feature_size=(feat_size[0], feat_size[1]),
        stride=(float(stride[0]), float(stride[1])),
        origin=(float(origin[0]), float(origin[1])),
        method=method,
        probe_size=(probe_size[0], probe_size[1]),
    )
    if per_model is None:
        try:
            per_model = _GEOMETRY_CACHE.setdefault(model, {})
        except TypeError:  # not weak-referenceable: no cache
            per_model = {}
    per_model[key] = geom
    return geom


_GEOMETRY_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cam_offset(
    model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224), **kwargs
) -> tuple[float, float]:
    """(dy, dx) in input pixels: reference-resize position minus true receptive-field centre of the cells.

    Positive values mean the reference CAM is drawn down/right of the evidence. See :func:`cam_geometry`.
    """
    return cam_geometry(model, input_size, **kwargs).offset


def format_cam_geometry(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224), **kwargs) -> str:
    """One line for ``timm-adl points``: feature size, stride, true centre of cell 0 and the CAM offset."""
    g = cam_geometry(model, input_size, **kwargs)
    (dy, dx), (my, mx) = g.offset, g.max_abs_offset
    return (
        f'CAM geometry at {g.input_size[0]}x{g.input_size[1]}: {g.feature_size[0]}x{g.feature_size[1]} cells, '
        f'stride {g.stride[0]:g}x{g.stride[1]:g} px, cell (0,0) centred at (y={g.origin[0]:g}, x={g.origin[1]:g}); '
        f'the reference resize draws the CAM {dy:+.1f} px (y), {dx:+.1f} px (x) from the true centres '
        f'(max |offset| {my:.1f}, {mx:.1f}); align="centered" corrects this'
    )
