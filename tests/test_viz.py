"""Pictures: jet colormap, boxes, Figure 3 and grids, atomic PNG writes."""

import os

import numpy as np
import pytest
import torch
from fakes import box_outline
from PIL import Image

from timm_adl.viz import (
    GT_COLOR,
    PRED_COLOR,
    cam_figure,
    cam_grid,
    draw_boxes,
    jet,
    overlay,
    save_png,
    to_uint8_image,
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
