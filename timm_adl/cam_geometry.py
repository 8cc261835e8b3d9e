"""Where the cells of a timm model's last feature map are centred in the input (receptive-field probe).

A plain resize assumes feature cell ``i`` is centred on input pixel ``(i + 0.5) * H / h - 0.5``. The true
centre of its receptive field depends on the paddings of the strided layers (a 3x3 stride-2 conv with
padding 1 centres cell ``i`` on pixel ``2 i``). :func:`cam_geometry` measures the true centres numerically;
``compute_cams(..., align='centered')`` resamples the CAM so that each cell lands on its measured centre.
Any feature layout :mod:`timm_adl.cam_heads` knows is probed on its (h, w) grid.
"""

from __future__ import annotations

import copy
import difflib
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .cam_heads import _model_name, _unwrap, check_timm_classifier, feature_layout, to_grid

__all__ = ['CamGeometry', 'cam_geometry', 'cam_offset', 'format_cam_geometry']


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
    feats = to_grid(feats, feature_layout(model, feats, size))  # (N, C, h, w) whatever the layout
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
    check_timm_classifier(model)  # a clear error for non-timm models before any work

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
