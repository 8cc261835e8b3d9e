"""Pictures of CAMs and boxes: the ADL paper's Figure 3 (image, heatmap, overlay with the ground-truth box
in red and the estimated box in green) for one image, and grids for a batch and several models.

PIL and numpy only (no matplotlib): the colormap is a numpy jet. Boxes are inclusive ``x0 y0 x1 y1``
pixels of the picture they are drawn on, the convention of the evaluation protocol.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write_bytes

__all__ = [
    'GT_COLOR',
    'PRED_COLOR',
    'cam_figure',
    'cam_grid',
    'draw_boxes',
    'heatmap',
    'jet',
    'overlay',
    'save_png',
    'to_uint8_image',
]

GT_COLOR = (255, 0, 0)  # ground truth: pure red
PRED_COLOR = (0, 255, 0)  # estimate: pure green
_PAD = 4


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def jet(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """The jet colormap (dark blue -> cyan -> yellow -> dark red) of values in [0, 1]: (..., 3) uint8.

    Piecewise linear like matplotlib's 'jet'; NaNs map to 0 (blue), values outside [0, 1] are clipped.
    """
    v = np.nan_to_num(_as_numpy(values).astype(np.float64), nan=0.0).clip(0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where r, g, b peak
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def to_uint8_image(
    image: np.ndarray | torch.Tensor | Image.Image,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a PIL image, a uint8 HWC array, or a (3, H, W) float tensor.

    A float tensor is un-normalised with ``mean``/``std`` when given (else taken as values in [0, 1]).
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert('RGB'))
    arr = _as_numpy(image)
    if arr.dtype == np.uint8:
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, -1)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f'a uint8 image must be (H, W) or (H, W, 3), got shape {arr.shape}')
        return arr
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f'a float image must be (3, H, W) or (1, H, W), got shape {arr.shape}')
    arr = arr.astype(np.float64)
    if std is not None:
        arr = arr * np.asarray(std, dtype=np.float64)[:, None, None]
    if mean is not None:
        arr = arr + np.asarray(mean, dtype=np.float64)[:, None, None]
    arr = np.repeat(arr, 3, 0) if arr.shape[0] == 1 else arr
    return np.round(arr.transpose(1, 2, 0).clip(0.0, 1.0) * 255).astype(np.uint8)


def _check_cam(cam: np.ndarray | torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    cam = _as_numpy(cam)
    if cam.shape != hw:
        raise ValueError(f'the CAM is {cam.shape}, the image {hw}: resize the CAM to the image first')
    return cam


def heatmap(cam: np.ndarray | torch.Tensor) -> np.ndarray:
    """The jet heatmap of an (H, W) map in [0, 1]: (H, W, 3) uint8."""
    return jet(cam)


def overlay(image: np.ndarray, cam: np.ndarray | torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend the jet heatmap of ``cam`` over an (H, W, 3) uint8 image: ``(1 - alpha) image + alpha heat``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    image = to_uint8_image(image)
    heat = jet(_check_cam(cam, image.shape[:2])).astype(np.float64)
    return np.round((1.0 - alpha) * image + alpha * heat).astype(np.uint8)


def _box_list(boxes: np.ndarray | torch.Tensor | Sequence | None) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4))
    arr = _as_numpy(boxes).astype(np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    return arr


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray | torch.Tensor | Sequence | None,
    color: tuple[int, int, int],
    width: int = 2,
) -> np.ndarray:
    """Draw (K, 4) inclusive ``x0 y0 x1 y1`` boxes as ``width``-px outlines inside the box, clipped to the
    image; returns a new array."""
    out = to_uint8_image(image).copy()
    h, w = out.shape[:2]
    for x0, y0, x1, y1 in _box_list(boxes):
        x0, x1 = int(max(0, min(x0, x1))), int(min(w - 1, max(x0, x1)))
        y0, y1 = int(max(0, min(y0, y1))), int(min(h - 1, max(y0, y1)))
        if x0 > w - 1 or y0 > h - 1 or x1 < 0 or y1 < 0:
            continue
        t = max(1, int(width))
        out[y0 : min(y0 + t, y1 + 1), x0 : x1 + 1] = color
        out[max(y1 - t + 1, y0) : y1 + 1, x0 : x1 + 1] = color
        out[y0 : y1 + 1, x0 : min(x0 + t, x1 + 1)] = color
        out[y0 : y1 + 1, max(x1 - t + 1, x0) : x1 + 1] = color
    return out


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_height(font: ImageFont.ImageFont) -> int:
    return int(font.getbbox('Ag')[3]) + 2


def _panel_row(panels: Sequence[np.ndarray]) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    gap = np.full((h, _PAD, 3), 255, np.uint8)
    parts = []
    for i, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)], 0)
        parts += [gap, p] if i else [p]
    return np.concatenate(parts, 1)


def cam_figure(
    image: np.ndarray | torch.Tensor | Image.Image,
    cam: np.ndarray | torch.Tensor,
    gt_boxes: np.ndarray | torch.Tensor | Sequence | None = None,
    pred_boxes: np.ndarray | torch.Tensor | Sequence | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.5,
    box_width: int = 2,
    title: str | None = None,
) -> Image.Image:
    """Figure 3 of the ADL paper for one image: [image | heatmap | overlay + GT (red) + estimate (green)]."""
    img = to_uint8_image(image, mean, std)
    cam = _check_cam(cam, img.shape[:2])
    over = overlay(img, cam, alpha)
    over = draw_boxes(over, gt_boxes, GT_COLOR, box_width)
    over = draw_boxes(over, pred_boxes, PRED_COLOR, box_width)
    row = _panel_row([img, heatmap(cam), over])
    return _with_header(Image.fromarray(row), [title] if title else None, [row.shape[1]])


def _with_header(body: Image.Image, titles: Sequence[str] | None, widths: Sequence[int]) -> Image.Image:
    if not titles:
        return body
    font = _font()
    th = _text_height(font)
    out = Image.new('RGB', (body.width, body.height + th + _PAD), (255, 255, 255))
    out.paste(body, (0, th + _PAD))
    draw = ImageDraw.Draw(out)
    x = 0
    for text, w in zip(titles, widths, strict=False):
        if text:
            draw.text((x + 2, 1), str(text), fill=(0, 0, 0), font=font)
        x += w + _PAD
    return out


def cam_grid(
    images: Sequence | torch.Tensor,
    cams: Sequence | torch.Tensor | np.ndarray,
    gt_boxes: Sequence | None = None,
    pred_boxes: Sequence | None = None,
    *,
    titles: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.5,
    box_width: int = 2,
    show_heatmap: bool = True,
) -> Image.Image:
    """A grid for a batch: one row per image; the image, then per model its heatmap and overlay.

    Args:
        images: N images (a (N, 3, H, W) float tensor, un-normalised with ``mean``/``std``, or a list).
        cams: N (H, W) maps for one model (array, tensor or list), or a list of M (N, H, W) batches
            (models side by side).
        gt_boxes: N (K_i, 4) ground-truth boxes (red), shared by all models.
        pred_boxes: estimated boxes (green): N (K_i, 4) for one model, or a list of M such lists.
        titles: M column titles (e.g. ``['CAM', 'ADL']``), shown over each model's columns.
    """
    # a list of 3-D batches is several models; a tensor, an array or a list of 2-D maps is one model
    multi = isinstance(cams, (list, tuple)) and len(cams) > 0 and np.ndim(_as_numpy(cams[0])) == 3
    cam_sets = list(cams) if multi else [cams]
    n = len(images)
    if any(len(c) != n for c in cam_sets):
        raise ValueError(
            f'every CAM batch must have {n} maps (one per image), got {[len(c) for c in cam_sets]}'
        )
    if pred_boxes is None:
        pred_sets = [None] * len(cam_sets)
    elif multi:
        pred_sets = list(pred_boxes)
    else:
        pred_sets = [pred_boxes]
    if len(pred_sets) != len(cam_sets):
        raise ValueError(f'got {len(cam_sets)} CAM batches but {len(pred_sets)} sets of estimated boxes')
    if titles is not None and len(titles) != len(cam_sets):
        raise ValueError(f'got {len(cam_sets)} CAM batches but {len(titles)} titles')
    rows, widths = [], None
    for i in range(n):
        img = to_uint8_image(images[i], mean, std)
        panels = [img]
        gt = None if gt_boxes is None else gt_boxes[i]
        for cam_set, preds in zip(cam_sets, pred_sets, strict=True):
            cam = _check_cam(cam_set[i], img.shape[:2])
            over = draw_boxes(overlay(img, cam, alpha), gt, GT_COLOR, box_width)
            over = draw_boxes(over, None if preds is None else preds[i], PRED_COLOR, box_width)
            panels += [heatmap(cam), over] if show_heatmap else [over]
        rows.append(_panel_row(panels))
        if widths is None:
            per_model = (2 * (img.shape[1] + _PAD) - _PAD) if show_heatmap else img.shape[1]
            widths = [img.shape[1]] + [per_model] * len(cam_sets)
    if not rows:
        raise ValueError('cam_grid needs at least one image')
    width = max(r.shape[1] for r in rows)
    rows = [np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)], 1) for r in rows]
    gap = np.full((_PAD, width, 3), 255, np.uint8)
    body = np.concatenate([x for r in rows for x in (r, gap)][:-1], 0)
    header = ['image', *titles] if titles else None
    return _with_header(Image.fromarray(body), header, widths or [])


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike) -> str:
    """Write a PNG atomically (:func:`timm_adl.files.atomic_write_bytes`); returns the path."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_uint8_image(image))
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    atomic_write_bytes(path, buf.getvalue(), durable=False)
    return os.fspath(path)
