"""Pictures: jet colormap, boxes, Figure 3 and grids, atomic PNG writes."""

import os

import numpy as np
import pytest
import torch
from fakes import box_outline, has_swatch
from PIL import Image

from timm_adl.viz import (
    GT_COLOR,
    PRED_COLOR,
    cam_figure,
    cam_grid,
    cam_panel,
    draw_boxes,
    jet,
    legend,
    overlay,
    save_png,
    to_uint8_image,
    upscale_factor,
)

PAD = 4  # gap between panels


def test_jet_colormap():
    c = jet(np.array([0.0, 0.25, 0.5, 0.75, 1.0, np.nan, -3.0, 7.0]))
    assert c.dtype == np.uint8 and c.shape == (8, 3)
    # dark blue -> cyan-ish -> green-yellow -> orange -> dark red, like matplotlib's jet
    np.testing.assert_array_equal(c[0], [0, 0, 128])
    np.testing.assert_array_equal(c[2], [128, 255, 128])
    np.testing.assert_array_equal(c[4], [128, 0, 0])
    np.testing.assert_array_equal(c[5], c[0])  # NaN -> 0
    np.testing.assert_array_equal(c[6], c[0])
    np.testing.assert_array_equal(c[7], c[4])
    # blue decreases and red increases along the map
    ramp = jet(np.linspace(0, 1, 101)).astype(int)
    assert ramp[-1, 0] > ramp[0, 0] and ramp[-1, 2] < ramp[0, 2]
    assert jet(torch.zeros(3, 4)).shape == (3, 4, 3)


def test_draw_boxes_pure_colours_and_clipping():
    img = np.full((30, 40, 3), 100, np.uint8)
    out = draw_boxes(img, [[5, 6, 20, 25]], GT_COLOR)
    drawn = {tuple(p) for p in np.argwhere((out == GT_COLOR).all(-1))}
    assert drawn == box_outline((5, 6, 20, 25))
    assert (img == 100).all()  # input untouched
    # boxes past the border are clipped, not wrapped; an empty list draws nothing
    out = draw_boxes(img, torch.tensor([[-5.0, -5.0, 100.0, 100.0]]), PRED_COLOR, width=1)
    assert (out[0] == PRED_COLOR).all() and (out[-1] == PRED_COLOR).all() and (out[:, 0] == PRED_COLOR).all()
    assert (out[1:-1, 1:-1] == 100).all()
    np.testing.assert_array_equal(draw_boxes(img, [], GT_COLOR), img)


def test_to_uint8_image_denormalises():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 9)).astype(np.float64) / 255
    tensor = torch.from_numpy((pixels - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]).float()
    out = to_uint8_image(tensor, mean, std)
    assert out.shape == (8, 9, 3)
    np.testing.assert_allclose(out.astype(int), np.round(pixels.transpose(1, 2, 0) * 255), atol=1)
    with pytest.raises(ValueError, match='float image'):
        to_uint8_image(torch.zeros(4, 5, 5))


def test_overlay_blends_heatmap():
    img = np.zeros((10, 12, 3), np.uint8)
    cam = np.linspace(0, 1, 120).reshape(10, 12)
    np.testing.assert_array_equal(overlay(img, cam, alpha=1.0), jet(cam))
    np.testing.assert_array_equal(overlay(img, cam, alpha=0.0), img)
    with pytest.raises(ValueError, match='resize the CAM'):
        overlay(img, np.zeros((5, 5)))


def test_cam_figure_layout_and_boxes():
    h, w = 48, 64
    img = np.full((h, w, 3), 90, np.uint8)
    cam = np.zeros((h, w))
    cam[10:30, 20:40] = 1.0
    gt, pred = [2, 3, 30, 40], [35, 5, 60, 44]
    fig = cam_figure(img, cam, [gt], [pred])
    assert fig.size == (3 * w + 2 * PAD, h)
    arr = np.asarray(fig)
    third = arr[:, 2 * (w + PAD) :]
    for y, x in box_outline(gt):
        assert tuple(third[y, x]) == GT_COLOR
    for y, x in box_outline(pred):
        assert tuple(third[y, x]) == PRED_COLOR
    np.testing.assert_array_equal(arr[:, :w], img)  # panel 1: the image untouched
    np.testing.assert_array_equal(arr[:, w + PAD : 2 * w + PAD], jet(cam))  # panel 2: the heatmap
    titled = cam_figure(img, cam, [gt], [pred], title='bird 12')
    assert titled.width == fig.width and titled.height > h


def test_cam_grid_models_side_by_side():
    n, h, w = 3, 20, 24
    images = torch.rand(n, 3, h, w)
    cams = [torch.rand(n, h, w), torch.rand(n, h, w)]
    gt = [torch.tensor([[1.0, 1.0, 10.0, 10.0]])] * n
    preds = [[np.array([[12, 2, 20, 15]])] * n, [np.array([[3, 4, 9, 18]])] * n]
    grid = cam_grid(images, cams, gt, preds, titles=['CAM', 'ADL'])
    body_w = w + 2 * 2 * (w + PAD)  # image + per model (heatmap, overlay)
    body_h = n * h + (n - 1) * PAD
    assert grid.width == body_w and grid.height > body_h
    arr = np.asarray(grid)[grid.height - body_h :]
    for model, box in ((0, (12, 2, 20, 15)), (1, (3, 4, 9, 18))):
        x_off = w + PAD + model * 2 * (w + PAD) + (w + PAD)
        for row in range(n):
            tile = arr[row * (h + PAD) : row * (h + PAD) + h, x_off : x_off + w]
            assert all(tuple(tile[y, x]) == PRED_COLOR for y, x in box_outline(box))
            assert (tile == GT_COLOR).all(-1).any()
    single = cam_grid(images, cams[0], gt, preds[0], show_heatmap=False)
    assert single.size == (2 * w + PAD, body_h)
    with pytest.raises(ValueError, match='one per image'):
        cam_grid(images, [cams[0][:2]], gt)
    with pytest.raises(ValueError, match='titles'):
        cam_grid(images, cams, gt, preds, titles=['CAM'])


def _tile_top(picture: np.ndarray, tile: np.ndarray) -> int:
    """Row where ``tile`` sits at the left edge of ``picture`` (below the column titles)."""
    h = tile.shape[0]
    for top in range(picture.shape[0] - h + 1):
        if np.array_equal(picture[top : top + h, : tile.shape[1]], tile):
            return top
    raise AssertionError('tile not found')


def _smooth_cam(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * w / 8))


def test_cam_panel_is_upscaled_titled_captioned_and_has_a_legend():
    side, scale = 96, 3  # a synthetic-set image: drawn 3x to reach min_size 288
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    cam = _smooth_cam(side, side)
    gt, pred = [5, 6, 40, 50], [50, 40, 90, 85]
    caption = 'class 3 (bird) [top-1], p = 0.912 | box: threshold 0.2 | CAM method: cam'
    panel = cam_panel(img, cam, gt_boxes=[gt], pred_boxes=[pred], caption=caption)
    tile = side * scale
    assert panel.width == 3 * tile + 2 * PAD and panel.height > tile
    arr = np.asarray(panel)
    big = np.repeat(np.repeat(img, scale, 0), scale, 1)  # nearest: each pixel a 3x3 block
    top = _tile_top(arr, big)
    assert top > 0 and (arr[:top] < 100).all(-1).any()  # the column titles, in dark ink above the tiles
    heat = arr[top : top + tile, tile + PAD : 2 * tile + PAD]
    # bilinear 3x: each block's centre pixel is the original map's value
    np.testing.assert_allclose(heat[1::3, 1::3].astype(int), jet(cam).astype(int), atol=1)
    third = arr[top : top + tile, 2 * (tile + PAD) :]
    for box, colour in ((gt, GT_COLOR), (pred, PRED_COLOR)):
        big_box = (box[0] * scale, box[1] * scale, box[2] * scale + 2, box[3] * scale + 2)  # same pixels
        assert all(tuple(third[y, x]) == colour for y, x in box_outline(big_box, width=3))
    below = arr[top + tile :]
    assert has_swatch(below, GT_COLOR) and has_swatch(below, PRED_COLOR)  # the legend
    assert not has_swatch(arr[: top + tile], GT_COLOR)  # only there
    bare = np.asarray(cam_panel(img, cam, gt_boxes=[gt], pred_boxes=[pred]))
    assert bare.shape[0] < arr.shape[0]  # the caption band
    np.testing.assert_array_equal(bare[: top + tile], arr[: top + tile])
    assert (arr[top + tile : top + tile + (arr.shape[0] - bare.shape[0])] < 100).all(-1).sum() > 50  # ink
    # no ground truth: no red swatch; a large photo is not upscaled
    no_gt = np.asarray(cam_panel(img, cam, pred_boxes=[pred], caption=caption))
    assert not has_swatch(no_gt, GT_COLOR) and has_swatch(no_gt[top + tile :], PRED_COLOR)
    large = cam_panel(np.zeros((300, 400, 3), np.uint8), np.zeros((300, 400)), min_size=288)
    assert large.width == 3 * 400 + 2 * PAD
    assert upscale_factor((96, 96), 288) == 3 and upscale_factor((70, 90), 288) == 5
    assert upscale_factor((300, 400), 288) == 1


def test_legend_swatches_scale_and_notes():
    strip = np.asarray(legend(500, font_size=16))
    assert strip.shape[1] == 500
    assert has_swatch(strip, GT_COLOR) and has_swatch(strip, PRED_COLOR)
    ramp = jet(np.linspace(0, 1, 50))
    assert any((strip == c).all(-1).any() for c in ramp[1:-1])  # the CAM colour scale
    noted = legend(500, ['CAM: best MaxBoxAcc threshold 0.23; ADL: 0.41; maps: cam'], font_size=16)
    assert noted.height > strip.shape[0]
    wrapped = legend(120, ['a note long enough to need several lines at this width'], font_size=16)
    assert wrapped.width == 120 and wrapped.height > noted.height  # wrapped, not cut off
    only_pred = np.asarray(legend(500, ground_truth=False, colorbar=False))
    assert not has_swatch(only_pred, GT_COLOR, 8) and has_swatch(only_pred, PRED_COLOR, 8)


def test_cam_grid_upscales_and_adds_the_legend():
    n, h, w = 2, 20, 24
    images = torch.rand(n, 3, h, w)
    cams = [torch.rand(n, h, w), torch.rand(n, h, w)]
    gt = [torch.tensor([[1.0, 1.0, 10.0, 10.0]])] * n
    preds = [[np.array([[12, 2, 20, 15]])] * n, [np.array([[3, 4, 9, 18]])] * n]
    plain = cam_grid(images, cams, gt, preds, titles=['CAM', 'ADL'], min_size=60)
    assert plain.width == 5 * 3 * w + 4 * PAD  # 3x: short side 20 -> 60
    keyed = cam_grid(images, cams, gt, preds, titles=['CAM', 'ADL'], min_size=60, with_legend=True)
    noted = cam_grid(
        images, cams, gt, preds, titles=['CAM', 'ADL'], min_size=60, with_legend=True, notes=['CAM 0.2']
    )
    assert plain.height < keyed.height < noted.height and keyed.width == plain.width
    arr = np.asarray(keyed)
    np.testing.assert_array_equal(arr[: plain.height], np.asarray(plain))
    assert has_swatch(arr[plain.height :], GT_COLOR) and has_swatch(arr[plain.height :], PRED_COLOR)
    assert not has_swatch(np.asarray(plain), PRED_COLOR)


def test_save_png_is_atomic_and_readable(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = save_png(arr, tmp_path / 'sub' / 'x.png')
    assert os.listdir(tmp_path / 'sub') == ['x.png']
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im.convert('RGB')), arr)
    # a failed write leaves the old file and no temp file behind
    with pytest.raises(ValueError, match='empty'):
        save_png(Image.new('RGB', (0, 0)), path)
    assert os.listdir(tmp_path / 'sub') == ['x.png']
