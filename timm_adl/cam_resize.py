"""Resampling CAMs to the input size as the wsolevaluation reference does, and their min-max normalisation.

The reference resizes with OpenCV ``INTER_CUBIC`` (Keys kernel, a = -0.75, half-pixel centres, replicated
border). Here the resize is two small matrix products (separable cubic weights, float64) on the model's
device, for a whole batch at once. Measured against ``cv2.resize(..., INTER_CUBIC)`` on the same float32
maps (200 random maps per size, 7/14/28 -> 224, 12 -> 96, 8/17 -> 299, 3 -> 64): at most 4.1e-7 of a map's
range apart (OpenCV's own result moves by up to 2e-7 at 7/14 -> 224 and 1.2e-6 at 8 -> 299 when its IPP
path is switched off, so there is no single exact value to match bit for bit; torch's own
``F.interpolate(mode='bicubic')`` is 1.6e-7 apart at integer scales, 1.2e-6 at 299); after normalisation at
most 6e-7 apart, so about 1e-5 of the 8-bit quantised pixels the box extraction sees move by one level.
``tests/test_cam.py::test_resize_matches_cv2_inter_cubic`` checks this.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .cam_geometry import CamGeometry

__all__ = ['ALIGNS', 'normalize_cams', 'resize_cams']

ALIGNS = ('reference', 'centered')
_ALIGNS = ALIGNS
_CUBIC_A = -0.75  # OpenCV's and PyTorch's bicubic kernel parameter


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
