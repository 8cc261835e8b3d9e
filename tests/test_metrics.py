"""timm_adl.metrics: the reference's own unit-test cases (wsolevaluation ``evaluation_test.py``) through
our public API, expected values included, and the behaviour of the evaluators."""

import numpy as np
import pytest
import torch

from timm_adl.metrics import (
    BoxEvaluator,
    MaskEvaluator,
    WSOLEvaluator,
    calibrated_accuracy,
    extract_boxes,
    iou_inclusive,
    resize_boxes,
)

# --- the reference's cases ----------------------------------------------------------------------------


def test_iou_degenerate_zero_boxes():
    ious = iou_inclusive(np.zeros((3, 4), dtype=int), np.zeros((5, 4), dtype=int))
    assert isinstance(ious, np.ndarray)
    assert ious.dtype == np.float64
    assert ious.shape == (3, 5)
    assert (ious == 1.0).all()


def test_iou_rejects_boxes_against_the_convention():
    with pytest.raises(ValueError, match='x1 >= x0'):
        iou_inclusive(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 2, 2]]))


def test_iou_eye_boxes():
    boxes = np.array([[1, 1, 3, 3], [4, 4, 5, 5]])
    assert (iou_inclusive(boxes, boxes) == np.eye(2)).all()


def test_iou_realistic_values():
    assert iou_inclusive(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))[0, 0] == pytest.approx(
        8 / 27, abs=1e-12
    )


def test_resize_boxes_case():
    assert resize_boxes([[1, 2, 4, 3]], image_size=(10, 20), resize_size=(35, 10)).tolist() == [[3, 1, 14, 1]]


def test_resize_boxes_degenerate():
    assert resize_boxes([[1, 2, 1, 2]], image_size=(3, 3), resize_size=(3, 3)).tolist() == [[1, 2, 1, 2]]


def test_boxes_of_degenerate_map():
    boxes = extract_boxes(np.zeros((3, 3)), np.arange(0, 1, 0.2))
    assert [b[0].tolist() for b in boxes] == [[0, 0, 0, 0]] * 5


def test_boxes_of_unimodal_map():
    scoremap = np.array(  # array[y][x]
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.4, 0.4, 0.4, 0.6],
            [0.0, 0.4, 1.0, 0.8, 0.6],
            [0.0, 0.4, 0.4, 0.4, 0.6],
        ]
    )
    boxes = extract_boxes(scoremap, np.arange(0, 1, 0.2))
    assert [b[0].tolist() for b in boxes] == [
        [1, 1, 4, 3],
        [1, 1, 4, 3],
        [2, 1, 4, 3],
        [2, 2, 4, 3],
        [2, 2, 3, 3],
    ]


def test_boxes_of_multimodal_map():
    scoremap = np.array(
        [
            [0.4, 0.0, 0.2, 0.2, 0.2],
            [0.4, 0.4, 0.0, 0.4, 0.0],
            [0.0, 0.0, 0.0, 0.4, 0.0],
            [1.0, 0.6, 0.8, 0.2, 0.2],
        ]
    )
    boxes = extract_boxes(scoremap, np.arange(0, 1, 0.2))
    assert [b[0].tolist() for b in boxes] == [
        [0, 0, 4, 3],
        [0, 0, 2, 2],
        [0, 3, 3, 3],
        [2, 3, 3, 3],
        [0, 3, 1, 3],
    ]


def test_boxes_of_nan_map_raise():
    with pytest.raises(ValueError, match='NaN'):
        extract_boxes(np.full((3, 3), np.nan), np.arange(0, 1, 0.2))


# PxAP on constant maps. The reference's test masks (224 x 224, OpenImages val) have these pixel counts:
# foreground, background, and the rest ignored. Masks with the same counts give the same PxAP.
_MASK_COUNTS = {'mask0': (43031, 7145), 'mask1': (833, 49342), 'mask2': (347, 13909)}


def _mask(positives: int, negatives: int, size: int = 224):
    fg = np.zeros(size * size, dtype=bool)
    ignore = np.zeros(size * size, dtype=bool)
    fg[:positives] = True
    ignore[positives + negatives :] = True
    return fg.reshape(1, size, size), ignore.reshape(1, size, size)


def _pxap(scoremap: np.ndarray, fg: np.ndarray, ignore: np.ndarray) -> float:
    ev = MaskEvaluator(np.arange(0, 1, 0.01))
    ev.update(scoremap, fg, ignore)
    return ev.compute()['pxap']


@pytest.mark.parametrize('name', sorted(_MASK_COUNTS))
@pytest.mark.parametrize('value', [0.0, 0.5, 1.0])
def test_pxap_of_constant_maps(name, value):
    pos, neg = _MASK_COUNTS[name]
    fg, ignore = _mask(pos, neg)
    scoremap = np.full(fg.shape, value)
    assert _pxap(scoremap, fg, ignore) == pytest.approx(100.0 * pos / (pos + neg), abs=1e-9)


@pytest.mark.parametrize('name', sorted(_MASK_COUNTS))
@pytest.mark.parametrize('ignore_score', [0.0, 1.0])
def test_pxap_of_perfect_maps(name, ignore_score):
    fg, ignore = _mask(*_MASK_COUNTS[name])
    scoremap = fg.astype(np.float64)
    scoremap[ignore] = ignore_score
    assert _pxap(scoremap, fg, ignore) == 100.0


@pytest.mark.parametrize('value', [0.0, 1.0])
def test_pxap_without_foreground_raises(value):
    fg, ignore = _mask(0, 30000)
    with pytest.raises(ValueError, match='foreground'):
        _pxap(np.full(fg.shape, value), fg, ignore)


@pytest.mark.parametrize('value', [0.0, 1.0])
def test_pxap_of_all_foreground_is_100(value):
    fg, ignore = _mask(224 * 224, 0)
    assert _pxap(np.full(fg.shape, value), fg, ignore) == pytest.approx(100.0)


def test_pxap_of_nan_map_raises():
    fg, ignore = _mask(1000, 1000)
    with pytest.raises(ValueError, match='NaN'):
        _pxap(np.full(fg.shape, np.nan), fg, ignore)


# --- box extraction beyond the reference's cases ------------------------------------------------------


def test_largest_contour_is_by_polygon_area_not_pixel_count():
    # a long thin line (many pixels, zero polygon area) against a small solid square
    m = np.zeros((12, 30))
    m[1, 1:28] = 1.0
    m[6:9, 10:13] = 0.9
    box = extract_boxes(m, [0.5])[0]
    assert box.tolist() == [[10, 6, 13, 9]]  # the square, one past its last pixel


def test_multi_contour_includes_hole_contours():
    m = np.zeros((9, 9))
    m[2:7, 2:7] = 1.0
    m[4, 4] = 0.0  # a hole: its contour runs through the pixels around it, x and y 3..5
    boxes = extract_boxes(m, [0.5], multi_contour=True)[0]
    assert sorted(boxes.tolist()) == [[2, 2, 7, 7], [3, 3, 6, 6]]  # one past the last pixel, as boundingRect


def test_box_clipped_to_the_image():
    boxes = extract_boxes(np.ones((4, 6)), [0.0])
    assert boxes[0].tolist() == [[0, 0, 5, 3]]  # boundingRect would reach 6, 4


def test_extract_boxes_accepts_tensors():
    m = torch.zeros(5, 5)
    m[1:4, 1:4] = 1
    assert extract_boxes(m, [0.5])[0].tolist() == [[1, 1, 4, 4]]


@pytest.mark.parametrize('bad', [np.full((3, 3), 1.5), -np.ones((3, 3)), np.ones((2, 3, 3))])
def test_extract_boxes_rejects_bad_maps(bad):
    with pytest.raises(ValueError):
        extract_boxes(bad, [0.5])


def test_thresholds_must_be_in_unit_interval():
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        BoxEvaluator(cam_thresholds=[0.5, 1.5])


# --- evaluators ---------------------------------------------------------------------------------------


def _blob_maps():
    """Two 20x20 maps: a square blob at (4..9) and one at (10..15), the second with a weak twin."""
    maps = np.zeros((2, 20, 20), dtype=np.float32)
    maps[0, 4:10, 4:10] = 1.0
    maps[1, 10:16, 10:16] = 1.0
    maps[1, 1:4, 1:4] = 0.3
    return maps


def test_box_evaluator_hand_computed():
    maps = _blob_maps()
    gt = [np.array([[4, 4, 10, 10]]), np.array([[1, 1, 15, 15]])]
    ev = BoxEvaluator(cam_thresholds=[0.0, 0.2, 0.5], iou_thresholds=(50,))
    ev.update(maps, gt)
    r = ev.compute()
    # map 0: box [4, 4, 10, 10] at every threshold (IoU 1). Map 1: the largest contour is the strong
    # blob, box [10, 10, 16, 16]: IoU 49 / 225 with the big box, below 0.5 at every threshold.
    assert r['curves'][50].tolist() == [50.0, 50.0, 50.0]
    assert r['max_box_acc'] == {50: 50.0}
    assert r['max_box_acc_v2'] == 50.0
    assert r['best_thresholds'] == {50: 0.0}
    assert r['num_images'] == 2


def test_box_evaluator_multi_contour_best_match_counts():
    maps = _blob_maps()[1:]
    gt = [np.array([[1, 1, 4, 4]])]  # the weak twin's box
    single = BoxEvaluator(cam_thresholds=[0.2], iou_thresholds=(50,))
    multi = BoxEvaluator(cam_thresholds=[0.2], iou_thresholds=(50,), multi_contour=True)
    single.update(maps, gt)
    multi.update(maps, gt)
    assert single.compute()['max_box_acc'][50] == 0.0
    assert multi.compute()['max_box_acc'][50] == 100.0


def test_box_evaluator_all_vs_first_ground_truth_box():
    maps = _blob_maps()[:1]
    gt = [np.array([[15, 15, 19, 19], [4, 4, 10, 10]])]  # the matching box is the second one
    for mode, expected in (('all', 100.0), ('first', 0.0)):
        ev = BoxEvaluator(cam_thresholds=[0.5], iou_thresholds=(50,), gt_box_mode=mode)
        ev.update(maps, gt)
        assert ev.compute()['max_box_acc'][50] == expected


def test_box_evaluator_streams_like_one_batch():
    rng = np.random.default_rng(0)
    maps = rng.random((6, 16, 16))
    gt = [np.array([[2, 2, 12, 9]]) for _ in range(6)]
    whole, parts = BoxEvaluator(), BoxEvaluator()
    whole.update(maps, gt)
    for i in range(0, 6, 2):
        parts.update(torch.from_numpy(maps[i : i + 2]), gt[i : i + 2])
    for d in (30, 50, 70):
        assert np.array_equal(whole.compute()['curves'][d], parts.compute()['curves'][d])
    whole.reset()
    with pytest.raises(ValueError, match='update'):
        whole.compute()


def test_box_evaluator_default_thresholds():
    ev = BoxEvaluator()
    assert np.array_equal(ev.cam_thresholds, np.arange(0, 1, 0.01))
    assert ev.iou_thresholds == (30, 50, 70)


@pytest.mark.parametrize(
    'gt, match',
    [
        ([np.zeros((0, 4))], 'at least one'),
        ([np.array([[5, 5, 2, 2]])], 'x1 >= x0'),
        ([np.array([[-1, 0, 2, 2]])], 'non-negative'),
        ([np.array([[0, 0, 2]])], r'\(K, 4\)'),
        ([], 'one \\(K, 4\\) array per score map'),
    ],
)
def test_box_evaluator_rejects_bad_boxes(gt, match):
    with pytest.raises(ValueError, match=match):
        BoxEvaluator().update(np.zeros((1, 8, 8)), gt)


def test_ground_truth_checked_per_batch_equals_per_image():
    """The batch-wide check gives what checking each image gives, for every accepted input form."""
    from timm_adl.metrics.boxes import check_boxes, check_gt_boxes

    gt = [
        np.array([[1, 2, 3, 4], [0, 0, 9, 9]]),
        [5, 5, 6, 7],
        torch.tensor([[2.0, 2.0, 3.0, 3.0]]),
        np.array([[1, 1, 2, 2]], dtype=np.uint8),
    ]
    for mode in ('all', 'first'):
        got = check_gt_boxes(gt, 4, mode)
        want = [check_boxes(b)[:1] if mode == 'first' else check_boxes(b) for b in gt]
        assert len(got) == 4
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.int64 and np.array_equal(g, w)


def test_bad_ground_truth_is_named_by_image():
    good = np.array([[0, 0, 3, 3]])
    with pytest.raises(ValueError, match=r'gt_boxes\[2\].*x1 >= x0'):
        BoxEvaluator().update(np.zeros((3, 8, 8)), [good, good, np.array([[5, 5, 2, 2]])])
    with pytest.raises(ValueError, match=r'gt_boxes\[1\].*whole pixel'):
        BoxEvaluator().update(np.zeros((2, 8, 8)), [good, np.array([[0.5, 0, 3, 3]])])


@pytest.mark.parametrize('value, match', [(np.nan, 'NaN'), (np.inf, 'NaN or infinite'), (1.5, r'\[0, 1\]')])
def test_evaluators_check_the_range_while_quantising(value, match):
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    maps[1, 3, 4] = value
    gt = [np.array([[0, 0, 3, 3]])] * 2
    with pytest.raises(ValueError, match=match):
        BoxEvaluator(num_threads=1).update(maps, gt)
    with pytest.raises(ValueError, match=match):
        WSOLEvaluator().update(maps, None, gt, np.zeros((2, 3)), np.zeros(2, dtype=np.int64))


def test_box_evaluator_rejects_bad_options():
    with pytest.raises(ValueError, match='gt_box_mode'):
        BoxEvaluator(gt_box_mode='last')
    with pytest.raises(ValueError, match='iou_thresholds'):
        BoxEvaluator(iou_thresholds=(0,))


def test_wsol_evaluator_protocols():
    maps = _blob_maps()
    gt = [np.array([[4, 4, 10, 10]]), np.array([[10, 10, 16, 16]])]
    logits = np.array([[2.0, 1.0], [2.0, 1.0]])  # both predict class 0
    labels = np.array([0, 1])  # the second prediction is wrong
    ev = WSOLEvaluator(cam_thresholds=np.arange(0, 1, 0.1))
    ev.update(maps, None, gt, torch.from_numpy(logits), torch.from_numpy(labels))
    r = ev.compute()
    assert r['top1_clas'] == 50.0
    assert r['gt_known_loc'] == 100.0
    assert r['top1_loc'] == 50.0
    assert r['max_box_acc'] == 100.0
    assert r['max_box_acc_v2'] == pytest.approx(100.0)
    assert r['best_threshold'] == 0.0
    assert set(r['curves']) == {'box_acc', 'box_acc_v2'}
    assert r['num_images'] == 2


def test_wsol_evaluator_scores_the_top1_cam():
    maps = _blob_maps()[:1]
    gt = [np.array([[4, 4, 10, 10]])]
    elsewhere = np.zeros_like(maps)
    elsewhere[0, 12:18, 12:18] = 1.0  # the top-1 class's CAM points away from the object
    ev = WSOLEvaluator()
    ev.update(maps, elsewhere, gt, np.array([[1.0, 0.0]]), np.array([0]))
    r = ev.compute()
    assert r['gt_known_loc'] == 100.0
    assert r['top1_loc'] == 0.0


def test_wsol_evaluator_rejects_mismatched_inputs():
    ev = WSOLEvaluator()
    with pytest.raises(ValueError, match='logits'):
        ev.update(np.zeros((2, 8, 8)), None, [np.array([[0, 0, 1, 1]])] * 2, np.zeros((3, 4)), np.zeros(2))


def test_calibrated_accuracy_uses_the_source_threshold():
    thresholds = [0.1, 0.5, 0.9]
    source = {'cam_thresholds': np.array(thresholds), 'curves': {50: np.array([10.0, 80.0, 30.0])}}
    target = {'cam_thresholds': np.array(thresholds), 'curves': {50: np.array([90.0, 60.0, 20.0])}}
    r = calibrated_accuracy(source, target)
    assert r['per_iou'][50] == {'threshold': 0.5, 'source_acc': 80.0, 'acc': 60.0}
    assert r['mean'] == 60.0


def test_calibrated_accuracy_on_wsol_results():
    maps = _blob_maps()
    gt = [np.array([[4, 4, 10, 10]]), np.array([[1, 1, 15, 15]])]
    ev = WSOLEvaluator(cam_thresholds=[0.1, 0.5])
    ev.update(maps, None, gt, np.array([[1.0, 0.0]] * 2), np.array([0, 0]))
    r = ev.compute()
    c = calibrated_accuracy(r, r)  # calibrating on the split itself gives the oracle numbers
    assert c['max_box_acc'] == r['max_box_acc']
    assert c['best_threshold'] == r['best_threshold']
    assert c['max_box_acc_v2'] == pytest.approx(r['max_box_acc_v2'])
    with pytest.raises(ValueError, match='same cam_thresholds'):
        calibrated_accuracy(r, {**r, 'cam_thresholds': np.array([0.1, 0.6])})


def test_mask_evaluator_ignore_region_and_shapes():
    fg = np.zeros((1, 4, 4), dtype=bool)
    fg[0, :2] = True
    scores = np.where(fg, 0.9, 0.1)
    scores[0, 3, 3] = 0.95  # a confident background pixel...
    ignore = np.zeros_like(fg)
    ignore[0, 3, 3] = True  # ...that is ignored: PxAP is perfect
    ev = MaskEvaluator()
    ev.update(scores, fg, ignore)
    assert ev.compute()['pxap'] == 100.0
    with pytest.raises(ValueError, match='shape'):
        ev.update(scores, fg[:, :2], None)


def test_maps_must_have_pixels():
    with pytest.raises(ValueError, match='pixels high and wide'):
        BoxEvaluator().update(np.zeros((2, 0, 5)), [np.array([[0, 0, 1, 1]])] * 2)


def test_quantize_scoremaps_truncates_like_the_reference():
    from timm_adl.metrics import quantize_scoremaps

    rng = np.random.default_rng(0)
    maps = np.concatenate([rng.random(997), np.arange(256) / 255, [0.0, 1.0, 0.2, 0.7]]).reshape(3, 1, 419)
    assert np.array_equal(quantize_scoremaps(maps), (maps * 255).astype(np.uint8))
    assert np.array_equal(
        quantize_scoremaps(maps[0].astype(np.float32)),
        (maps[0].astype(np.float32).astype(np.float64) * 255).astype(np.uint8),
    )
