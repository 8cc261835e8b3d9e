"""Pictures of CAMs and boxes: the ADL paper's Figure 3 (image, heatmap, overlay with the ground-truth box
in red and the estimated box in green) for one image, and grids for a batch and several models.

PIL and numpy only (no matplotlib): the colormap is a numpy jet. Boxes are inclusive ``x0 y0 x1 y1``
pixels of the picture they are drawn on, the convention of the evaluation protocol.

Small inputs (the 96 px synthetic set) are upscaled by an integer factor before drawing so text and boxes
stay readable (``min_size``): the photo by nearest neighbour (each pixel becomes an s x s block, nothing
invented), the CAM bilinearly (it is already a bilinear upsampling of a coarse feature grid, so blocks
would only show the photo's pixel grid, not the model). Boxes cover the same pixels after scaling.
"""

from __future__ import annotations

import functools
import io
import math
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
    'cam_panel',
    'draw_boxes',
    'heatmap',
    'jet',
    'legend',
    'overlay',
    'save_png',
    'to_uint8_image',
    'upscale_factor',
]

GT_COLOR = (255, 0, 0)  # ground truth: pure red
PRED_COLOR = (0, 255, 0)  # estimate: pure green
_PAD = 4
_WHITE = (255, 255, 255)
_INK = (0, 0, 0)
PANEL_TITLES = ('image', 'CAM heatmap', 'CAM + boxes')


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


@functools.lru_cache(maxsize=8)
def _font(size: int = 0) -> ImageFont.ImageFont:
    """PIL's bundled font at ``size`` px (Pillow >= 10.1 with FreeType); else its tiny bitmap font."""
    if size:
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, ImportError, OSError):  # Pillow < 10.1 takes no size; no FreeType: no scaling
            pass
    return ImageFont.load_default()


def _font_size(tile: int) -> int:
    """Text in proportion to the pictures: 16 px over 288 px tiles, never under 11 px."""
    return max(11, tile // 18)


def _default_box_width(tile: int) -> int:
    return max(2, tile // 96)


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` px wide (a longer word gets its own line)."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or ['']:
        line = ''
        for word in paragraph.split(' '):
            trial = f'{line} {word}' if line else word
            if line and font.getlength(trial) > width:
                lines.append(line)
                trial = word
            line = trial
        lines.append(line)
    return lines


def _text_band(texts: Sequence[str], width: int, size: int) -> Image.Image:
    """A white strip with ``texts`` wrapped to ``width``, one line under the other."""
    font = _font(size)
    lines = [line for t in texts for line in _wrap(t, font, width - 4)]
    th = _text_height(font)
    band = Image.new('RGB', (width, len(lines) * th + _PAD), _WHITE)
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        draw.text((2, i * th + _PAD // 2), line, fill=_INK, font=font)
    return band


def _stack(parts: Sequence[Image.Image | None]) -> Image.Image:
    """Pictures one under the other, left-aligned on white."""
    parts = [p for p in parts if p is not None]
    out = Image.new('RGB', (max(p.width for p in parts), sum(p.height for p in parts)), _WHITE)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out


def legend(
    width: int,
    notes: Sequence[str] = (),
    *,
    font_size: int = 14,
    ground_truth: bool = True,
    estimate: bool = True,
    colorbar: bool = True,
) -> Image.Image:
    """A white strip ``width`` px wide that says what the colours mean: a red swatch for the ground-truth
    box, a green one for the estimate, the jet scale of the (min-max normalised) CAM, then ``notes`` (the
    threshold and CAM method) as wrapped text lines. Items start a new line where they would not fit."""
    font = _font(font_size)
    th = _text_height(font)
    side = th - 2
    items: list[tuple[str, np.ndarray, str]] = []  # (text before, swatch, text after)
    if ground_truth:
        items.append(('', np.full((side, side, 3), GT_COLOR, np.uint8), 'ground truth'))
    if estimate:
        items.append(('', np.full((side, side, 3), PRED_COLOR, np.uint8), 'estimate'))
    if colorbar:
        ramp = jet(np.linspace(0.0, 1.0, 5 * side))
        items.append(('CAM 0', np.repeat(ramp[None], side, 0), '1 (min-max per image)'))
    placed, x, y = [], 2, _PAD // 2
    for lead, swatch, text in items:
        item_w = int(font.getlength(lead + text)) + swatch.shape[1] + 8 + 3 * _PAD
        if x > 2 and x + item_w > width:
            x, y = 2, y + th
        placed.append((x, y, lead, swatch, text))
        x += item_w
    strip = Image.new('RGB', (width, y + th + _PAD), _WHITE)
    draw = ImageDraw.Draw(strip)
    for x, y, lead, swatch, text in placed:
        if lead:
            draw.text((x, y), lead, fill=_INK, font=font)
            x += int(font.getlength(lead)) + 4
        strip.paste(Image.fromarray(swatch), (x, y + 1))
        draw.text((x + swatch.shape[1] + 4, y), text, fill=_INK, font=font)
    return _stack([strip, _text_band(notes, width, font_size) if notes else None])


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


def _with_header(
    body: Image.Image, titles: Sequence[str] | None, widths: Sequence[int], size: int = 0
) -> Image.Image:
    if not titles:
        return body
    font = _font(size)
    th = _text_height(font)
    out = Image.new('RGB', (body.width, body.height + th + _PAD), _WHITE)
    out.paste(body, (0, th + _PAD))
    draw = ImageDraw.Draw(out)
    x = 0
    for text, w in zip(titles, widths, strict=False):
        if text:
            draw.text((x + 2, 1), str(text), fill=_INK, font=font)
        x += w + _PAD
    return out


def upscale_factor(hw: tuple[int, int], min_size: int) -> int:
    """The smallest integer factor that brings the short side of an ``hw`` picture to ``min_size`` px
    (1 when it is already that big): integer, so every pixel becomes a whole block."""
    short = min(hw)
    return max(1, math.ceil(min_size / short)) if short > 0 else 1


def _upscale_image(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest neighbour: each pixel becomes a ``scale`` x ``scale`` block (why: the module docstring)."""
    return image if scale == 1 else np.repeat(np.repeat(image, scale, 0), scale, 1)


def _upscale_cam(cam: np.ndarray, scale: int) -> np.ndarray:
    """Bilinear, clipped back to [0, 1] (why: the module docstring)."""
    if scale == 1:
        return cam
    h, w = cam.shape
    small = Image.fromarray(np.asarray(cam, dtype=np.float32))  # mode 'F'
    return np.asarray(small.resize((w * scale, h * scale), Image.Resampling.BILINEAR)).clip(0.0, 1.0)


def _scale_boxes(boxes: np.ndarray | torch.Tensor | Sequence | None, scale: int) -> np.ndarray | None:
    """Inclusive boxes after an integer upscale: pixels x0..x1 become x0*s .. (x1+1)*s - 1."""
    if boxes is None or scale == 1:
        return boxes
    b = _box_list(boxes) * scale
    b[:, 2:] += scale - 1
    return b


def _boxes_tile(
    image: np.ndarray, cam: np.ndarray, gt, pred, alpha: float, box_width: int, scale: int
) -> np.ndarray:
    over = draw_boxes(overlay(image, cam, alpha), _scale_boxes(gt, scale), GT_COLOR, box_width)
    return draw_boxes(over, _scale_boxes(pred, scale), PRED_COLOR, box_width)


def cam_panel(
    image: np.ndarray | torch.Tensor | Image.Image,
    cam: np.ndarray | torch.Tensor,
    *,
    gt_boxes: np.ndarray | torch.Tensor | Sequence | None = None,
    pred_boxes: np.ndarray | torch.Tensor | Sequence | None = None,
    caption: str = '',
    notes: Sequence[str] = (),
    min_size: int = 288,
    titles: Sequence[str] = PANEL_TITLES,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.5,
    box_width: int | None = None,
) -> Image.Image:
    """Figure 3 of the ADL paper as a picture to read: [image | heatmap | overlay with the ground-truth box
    (red) and the estimate (green)], upscaled so the short side is at least ``min_size`` px, a title over
    each column, the ``caption`` (class, probability, threshold, CAM method) and the legend below.

    Boxes are in pixels of ``image`` (inclusive ``x0 y0 x1 y1``); ``cam`` has the image's size, in [0, 1].
    The legend shows the red swatch only when ``gt_boxes`` is given.
    """
    img = to_uint8_image(image, mean, std)
    cam = _check_cam(cam, img.shape[:2])
    scale = upscale_factor(img.shape[:2], min_size)
    img, cam = _upscale_image(img, scale), _upscale_cam(cam, scale)
    tile = min(img.shape[:2])
    width = box_width or _default_box_width(tile)
    over = _boxes_tile(img, cam, gt_boxes, pred_boxes, alpha, width, scale)
    row = Image.fromarray(_panel_row([img, heatmap(cam), over]))
    size = _font_size(tile)
    body = _with_header(row, list(titles), [img.shape[1]] * 3, size)
    caption_band = _text_band([caption], row.width, size) if caption else None
    key = legend(row.width, notes, font_size=size, ground_truth=gt_boxes is not None)
    return _stack([body, caption_band, key])


def _column_titles(titles: Sequence[str] | None, show_heatmap: bool) -> list[str] | None:
    """One title per column: 'image', then per model '<M> heatmap', '<M> boxes' (or just '<M>')."""
    if not titles:
        return None
    per_model = [[f'{t} heatmap', f'{t} boxes'] if show_heatmap else [str(t)] for t in titles]
    return ['image', *(c for cols in per_model for c in cols)]


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
    box_width: int | None = None,
    show_heatmap: bool = True,
    min_size: int = 0,
    with_legend: bool = False,
    notes: Sequence[str] = (),
) -> Image.Image:
    """A grid for a batch: one row per image; the image, then per model its heatmap and overlay.

    Args:
        images: N images (a (N, 3, H, W) float tensor, un-normalised with ``mean``/``std``, or a list).
        cams: N (H, W) maps for one model (array, tensor or list), or a list of M (N, H, W) batches
            (models side by side).
        gt_boxes: N (K_i, 4) ground-truth boxes (red), shared by all models.
        pred_boxes: estimated boxes (green): N (K_i, 4) for one model, or a list of M such lists.
        titles: M model names (e.g. ``['CAM', 'ADL']``): each column gets its title ('CAM heatmap', ...).
        min_size: upscale each image so its short side is at least this many px (0: as given).
        with_legend: add the legend strip (:func:`legend`) at the bottom, with ``notes`` (thresholds,
            CAM method) under it.
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
    if n == 0:
        raise ValueError('cam_grid needs at least one image')
    rows, tile_w, tile = [], 0, 0
    for i in range(n):
        img = to_uint8_image(images[i], mean, std)
        scale = upscale_factor(img.shape[:2], min_size)
        big = _upscale_image(img, scale)
        tile_w, tile = tile_w or big.shape[1], tile or min(big.shape[:2])
        width = box_width or _default_box_width(min(big.shape[:2]))
        panels = [big]
        gt = None if gt_boxes is None else gt_boxes[i]
        for cam_set, preds in zip(cam_sets, pred_sets, strict=True):
            cam = _upscale_cam(_check_cam(cam_set[i], img.shape[:2]), scale)
            over = _boxes_tile(big, cam, gt, None if preds is None else preds[i], alpha, width, scale)
            panels += [heatmap(cam), over] if show_heatmap else [over]
        rows.append(_panel_row(panels))
    width = max(r.shape[1] for r in rows)
    rows = [np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)], 1) for r in rows]
    gap = np.full((_PAD, width, 3), 255, np.uint8)
    body = np.concatenate([x for r in rows for x in (r, gap)][:-1], 0)
    header = _column_titles(titles, show_heatmap)
    size = _font_size(tile)
    grid = _with_header(Image.fromarray(body), header, [tile_w] * len(header or []), size)
    return _stack([grid, legend(width, notes, font_size=size) if with_legend else None])


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike) -> str:
    """Write a PNG atomically (:func:`timm_adl.files.atomic_write_bytes`); returns the path."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_uint8_image(image))
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    atomic_write_bytes(path, buf.getvalue(), durable=False)
    return os.fspath(path)
