"""The fast box extraction against the plain reference pipeline, written here from its definition.

The reference (wsolevaluation ``compute_bboxes_from_scoremaps`` and ``BoxEvaluator.accumulate``) runs,
for every map and every threshold: 8-bit truncation, ``cv2.threshold`` at ``int(thr * max)``,
``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``, the largest contour by ``contourArea`` or all of them,
``boundingRect`` (+ width / height, clipped), and the best inclusive IoU with the ground truth. Our boxes
come from a component tree instead; they must be identical, box for box, on every kind of map.
"""

import cv2
import numpy as np
import pytest

from timm_adl.metrics import BoxEvaluator, WSOLEvaluator, extract_boxes
from timm_adl.metrics import boxes as boxes_module

THRESHOLDS = np.arange(0, 1, 0.01)


def reference_boxes(scoremap: np.ndarray, thresholds, multi_contour: bool) -> list[np.ndarray]:
    image = np.expand_dims((scoremap.astype(np.float64) * 255).astype(np.uint8), 2)
    height, width = scoremap.shape
    out = []
    for thr in thresholds:
        _, binary = cv2.threshold(image, int(thr * np.max(image)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        if len(contours) == 0:
            out.append(np.zeros((1, 4), dtype=np.int64))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.asarray(boxes, dtype=np.int64))
    return out


def reference_curves(maps, gt_boxes, multi_contour: bool, iou_thresholds=(30, 50, 70)) -> dict:
    correct = {d: np.zeros(len(THRESHOLDS)) for d in iou_thresholds}
    for scoremap, gt in zip(maps, gt_boxes, strict=True):
        best = []
        for est in reference_boxes(scoremap, THRESHOLDS, multi_contour):
            a, b = est[:, None, :], gt[None, :, :]
            ix = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
            iy = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
            inter = ix * iy
            union = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
            union = union + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter
            best.append((inter / union).max())
        for d in iou_thresholds:
            correct[d][np.asarray(best) >= d / 100] += 1
    return {d: c * 100.0 / len(maps) for d, c in correct.items()}


def _normalise(m: np.ndarray) -> np.ndarray:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _upsampled(rng, res: int, size: int, interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    low = rng.normal(size=(res, res)).astype(np.float32)
    return _normalise(cv2.resize(low, (size, size), interpolation=interpolation))


def _blobs(rng, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:7, 0:7] / 6
    low = rng.normal(0, 0.05, (7, 7))
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.random(2)
        low += rng.uniform(0.3, 1) * np.exp(
            -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(0.1, 0.3) ** 2)
        )
    return _normalise(cv2.resize(low.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC))


def _rings(rng, size: int) -> np.ndarray:
    """Donuts and nested rings: every level has holes, some with islands inside."""
    yy, xx = np.mgrid[0:size, 0:size]
    m = np.zeros((size, size))
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0, size, 2)
        r = np.hypot(xx - cx, yy - cy)
        m += np.cos(r / rng.uniform(2, 6)) * np.exp(-r / size)
    return _normalise(m)


MAKERS = {
    'bicubic 7x7': lambda rng, s: _upsampled(rng, 7, s),
    'bicubic 14x14': lambda rng, s: _upsampled(rng, 14, s),
    'bilinear 14x14': lambda rng, s: _upsampled(rng, 14, s, cv2.INTER_LINEAR),
    'nearest 6x6 (plateaus)': lambda rng, s: _upsampled(rng, 6, s, cv2.INTER_NEAREST),
    'multi-blob': _blobs,
    'rings and holes': _rings,
    'noise': lambda rng, s: rng.random((s, s)),
    'few levels': lambda rng, s: np.round(rng.random((s, s)) * 3) / 3,
    'float64 bicubic': lambda rng, s: _upsampled(rng, 7, s).astype(np.float64) ** 1.5,
}


@pytest.mark.parametrize('kind', sorted(MAKERS))
@pytest.mark.parametrize('multi_contour', [False, True])
def test_boxes_equal_plain_opencv_pipeline(kind, multi_contour):
    rng = np.random.default_rng(sorted(MAKERS).index(kind))
    for i in range(6):
        size = (24, 37, 64)[i % 3]
        m = MAKERS[kind](rng, size)
        ours = extract_boxes(m, THRESHOLDS, multi_contour=multi_contour)
        ref = reference_boxes(m, THRESHOLDS, multi_contour)
        for k, (a, b) in enumerate(zip(ours, ref, strict=True)):
            assert sorted(a.tolist()) == sorted(b.tolist()), f'{kind} map {i} threshold {THRESHOLDS[k]:.2f}'


@pytest.mark.parametrize('multi_contour', [False, True])
def test_accuracies_equal_plain_pipeline_at_224(multi_contour):
    rng = np.random.default_rng(7)
    maps = np.stack([_blobs(rng, 224) if i % 2 else _upsampled(rng, 14, 224) for i in range(6)])
    gt = []
    for _ in maps:  # one or two random boxes per map
        corners = np.sort(rng.integers(0, 224, (int(rng.integers(1, 3)), 2, 2)), axis=1)  # (K, lo/hi, x/y)
        gt.append(np.concatenate([corners[:, 0], corners[:, 1]], axis=1))
    ev = BoxEvaluator(multi_contour=multi_contour)
    ev.update(maps[:4], gt[:4])
    ev.update(maps[4:], gt[4:])
    ours = ev.compute()['curves']
    ref = reference_curves(maps, gt, multi_contour)
    for d in (30, 50, 70):
        assert np.array_equal(ours[d], ref[d]), d


def test_odd_shapes_and_ties():
    rng = np.random.default_rng(3)
    maps = [
        np.zeros((1, 1)),
        rng.random((1, 17)),
        rng.random((13, 1)),
        np.ones((5, 4)) * 0.5,
        np.kron(np.eye(3), np.ones((3, 3))),  # three equal squares on a diagonal: a tie in area
        np.kron(rng.integers(0, 2, (4, 4)), np.ones((2, 2))).astype(float),
    ]
    for m in maps:
        for multi in (False, True):
            ours = extract_boxes(m, THRESHOLDS, multi_contour=multi)
            ref = reference_boxes(m, THRESHOLDS, multi)
            assert [sorted(a.tolist()) for a in ours] == [sorted(b.tolist()) for b in ref]


def test_wsol_metrics_equal_plain_pipeline():
    rng = np.random.default_rng(11)
    n = 8
    maps = np.stack([_blobs(rng, 64) for _ in range(n)]).astype(np.float32)
    other = np.stack([_upsampled(rng, 7, 64) for _ in range(n)]).astype(np.float32)
    gt = []
    for _ in maps:
        corners = np.sort(rng.integers(0, 64, (1, 2, 2)), axis=1)
        gt.append(np.concatenate([corners[:, 0], corners[:, 1]], axis=1))
    logits = rng.normal(size=(n, 3))
    labels = rng.integers(0, 3, n)
    right = logits.argmax(1) == labels
    top1 = np.where(right[:, None, None], other, maps)  # a right prediction brings its own CAM here

    ev = WSOLEvaluator(cam_threshold=0.2)
    ev.update(maps, top1, gt, logits, labels)
    r = ev.compute()

    def best_iou(boxes, g):
        a, b = boxes[:, None, :], g[None, :, :]
        ix = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
        iy = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
        union = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
        union = union + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - ix * iy
        return (ix * iy / union).max()

    gt_known = [
        best_iou(reference_boxes(m, [0.2], False)[0], g) >= 0.5 for m, g in zip(maps, gt, strict=True)
    ]
    top1_ok = [best_iou(reference_boxes(m, [0.2], False)[0], g) >= 0.5 for m, g in zip(top1, gt, strict=True)]
    assert r['top1_clas'] == 100.0 * right.mean()
    assert r['gt_known_loc'] == 100.0 * np.mean(gt_known)
    assert r['top1_loc'] == 100.0 * np.mean(right & np.array(top1_ok))
    v1 = reference_curves(maps, gt, False, (50,))[50]
    v2 = reference_curves(maps, gt, True)
    assert np.array_equal(r['curves']['box_acc'][50], v1)
    assert r['max_box_acc'] == v1.max()
    assert r['max_box_acc_v2'] == np.average([v2[d].max() for d in (30, 50, 70)])


def test_fine_threshold_grid_of_the_reference_config():
    # wsolevaluation's config.py default cam_curve_interval is 0.001: up to 255 distinct levels per map
    rng = np.random.default_rng(5)
    thresholds = np.arange(0, 1, 0.001)
    for m in (_blobs(rng, 40), _rings(rng, 40)):
        for multi in (False, True):
            ours = extract_boxes(m, thresholds, multi_contour=multi)
            ref = reference_boxes(m, thresholds, multi)
            assert [sorted(a.tolist()) for a in ours] == [sorted(b.tolist()) for b in ref]


def _no_opencv_fallback(monkeypatch):
    """Make any use of OpenCV in the largest-contour path fail: the sweep must decide on its own."""

    def refuse(*args, **kwargs):
        raise AssertionError('the largest contour was left to OpenCV')

    monkeypatch.setattr(boxes_module, '_unique_largest', refuse)
    monkeypatch.setattr(boxes_module, 'contour_boxes', refuse)


@pytest.mark.parametrize('ratio', [0.8, 0.95])
def test_near_equal_blobs_are_settled_by_exact_areas(monkeypatch, ratio):
    # two discs whose areas differ by a few percent (never equal: a tie is OpenCV's to break, by its
    # contour order): box bounds cannot order them, polygon areas can
    yy, xx = np.mgrid[0:64, 0:96]
    m = np.maximum(
        np.clip(1 - np.hypot(xx - 24, yy - 30) / 14, 0, 1),
        0.9 * np.clip(1 - np.hypot(xx - 70, yy - 34) / (14 * ratio**0.5), 0, 1),
    )
    ref = reference_boxes(m, THRESHOLDS, False)
    _no_opencv_fallback(monkeypatch)
    ours = extract_boxes(m, THRESHOLDS, multi_contour=False)
    assert [a.tolist() for a in ours] == [b.tolist() for b in ref]


def test_a_hole_is_counted_in_its_component_area():
    # a ring of outer area larger than a solid square beside it, but with fewer pixels: the ring's
    # contour encloses its hole, so it wins; counting the ring's own pixels only would pick the square
    m = np.zeros((30, 60))
    m[3:27, 3:27] = 1.0
    m[5:25, 5:25] = 0.0  # ring: outer polygon 23 x 23 = 529, pixels 576 - 400 = 176
    m[5:20, 35:50] = 1.0  # square: polygon 14 x 14 = 196, pixels 225
    for multi in (False, True):
        ours = extract_boxes(m, [0.5], multi_contour=multi)[0]
        ref = reference_boxes(m, [0.5], multi)[0]
        assert sorted(ours.tolist()) == sorted(ref.tolist())
    assert ours.tolist() != [[35, 5, 50, 20]]
    assert extract_boxes(m, [0.5])[0].tolist() == [[3, 3, 27, 27]]


@pytest.mark.parametrize('multi_contour', [False, True])
def test_threads_give_the_same_numbers(multi_contour):
    rng = np.random.default_rng(13)
    maps = np.stack([_blobs(rng, 64) if i % 2 else _upsampled(rng, 7, 64) for i in range(40)])
    gt = [np.array([[10, 12, 40, 50]]) for _ in maps]
    one = BoxEvaluator(multi_contour=multi_contour, num_threads=1)
    many = BoxEvaluator(multi_contour=multi_contour, num_threads=3)
    for ev in (one, many):
        ev.update(maps, gt)
    for d in (30, 50, 70):
        assert np.array_equal(one.compute()['curves'][d], many.compute()['curves'][d])
    wsol = [WSOLEvaluator(num_threads=t) for t in (1, 3)]
    logits = np.eye(4)[rng.integers(0, 4, len(maps))]
    for ev in wsol:
        ev.update(maps, None, gt, logits, logits.argmax(1))
    a, b = (ev.compute() for ev in wsol)
    assert a['max_box_acc'] == b['max_box_acc'] and a['max_box_acc_v2'] == b['max_box_acc_v2']
    assert a['gt_known_loc'] == b['gt_known_loc']


@pytest.mark.parametrize('bad', [0, -1, 1.5, True, '2'])
def test_num_threads_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match='num_threads'):
        BoxEvaluator(num_threads=bad)
    with pytest.raises(ValueError, match='num_threads'):
        WSOLEvaluator(num_threads=bad)


def test_pipelined_update_owns_its_batch_and_waits_in_compute(monkeypatch):
    import copy
    import pickle

    import timm_adl.metrics.box_evaluator as box_evaluator_module

    rng = np.random.default_rng(17)
    maps = np.stack([_blobs(rng, 48) for _ in range(24)]).astype(np.float32)
    gt = [np.array([[5, 5, 30, 30]]) for _ in maps]
    sync = BoxEvaluator(num_threads=1)
    sync.update(maps, gt)
    expected = sync.compute()['curves']

    ev = BoxEvaluator(num_threads=2)
    buffer = maps.copy()
    ev.update(buffer, gt)
    buffer[:] = 0.0  # the caller reuses its buffer at once: the batch must already be ev's own
    assert all(np.array_equal(ev.compute()['curves'][d], expected[d]) for d in (30, 50, 70))

    ev.update(maps, gt)  # a copy or a pickle waits for the pending batch and carries its counts
    for other in (copy.deepcopy(ev), pickle.loads(pickle.dumps(ev))):
        assert other.compute()['num_images'] == 48
        other.update(maps, gt)
        assert other.compute()['num_images'] == 72
    ev.update(maps, gt)
    ev.reset()  # pending work is dropped
    ev.update(maps, gt)
    assert ev.compute()['num_images'] == 24

    def broken(*args, **kwargs):
        raise RuntimeError('worker failed')

    monkeypatch.setattr(box_evaluator_module, 'batch_boxes', broken)
    ev = BoxEvaluator(num_threads=2)
    ev.update(maps, gt)  # returns: the error comes with the result
    with pytest.raises(RuntimeError, match='worker failed'):
        ev.compute()
