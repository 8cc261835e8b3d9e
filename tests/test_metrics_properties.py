"""Property tests (hypothesis) for the inclusive IoU and the box extraction."""

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_metrics_equivalence import reference_boxes

from timm_adl.metrics import extract_boxes, iou_inclusive

coord = st.integers(0, 12)


@st.composite
def boxes(draw):
    x0, x1 = sorted((draw(coord), draw(coord)))
    y0, y1 = sorted((draw(coord), draw(coord)))
    return [x0, y0, x1, y1]


def _pixels(box) -> set:
    x0, y0, x1, y1 = box
    return {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


@given(boxes(), boxes())
def test_iou_is_the_pixel_set_iou(a, b):
    pa, pb = _pixels(a), _pixels(b)
    assert iou_inclusive([a], [b])[0, 0] == len(pa & pb) / len(pa | pb)


@given(st.lists(boxes(), min_size=1, max_size=4), st.lists(boxes(), min_size=1, max_size=4))
def test_iou_symmetric_bounded_and_one_on_itself(a, b):
    ab = iou_inclusive(a, b)
    assert ab.shape == (len(a), len(b))
    assert np.array_equal(ab, iou_inclusive(b, a).T)
    assert ((ab >= 0) & (ab <= 1)).all()
    assert (np.diag(iou_inclusive(a, a)) == 1).all()


# maps with ties and plateaus (a few distinct values) as well as arbitrary floats
values = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0, 1, width=32))
maps = st.tuples(st.integers(1, 11), st.integers(1, 11)).flatmap(
    lambda shape: arrays(np.float32, shape, elements=values)
)
thresholds = st.lists(st.floats(0, 1), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(maps, thresholds, st.booleans())
def test_boxes_equal_opencv(scoremap, thr, multi_contour):
    ours = extract_boxes(scoremap, thr, multi_contour=multi_contour)
    ref = reference_boxes(scoremap, thr, multi_contour)
    assert [sorted(a.tolist()) for a in ours] == [sorted(b.tolist()) for b in ref]


@settings(max_examples=100, deadline=None)
@given(maps, thresholds)
def test_boxes_inside_the_image_and_kept_pixels_inside_the_largest_box(scoremap, thr):
    h, w = scoremap.shape
    q = (scoremap.astype(np.float64) * 255).astype(np.uint8)
    for t, box in zip(thr, extract_boxes(scoremap, thr), strict=True):
        x0, y0, x1, y1 = box[0]
        assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
        kept = q > int(t * q.max())
        if kept.any():  # the box covers the whole component of its contour
            n, labels = cv2.connectedComponents(kept.astype(np.uint8), connectivity=8)
            inside = labels[y0 : y1 + 1, x0 : x1 + 1]
            assert any((labels == k).sum() == (inside == k).sum() for k in range(1, n))


@st.composite
def unimodal(draw, n: int):
    """A sequence of ``n`` small levels that rises (not strictly) to a peak, then falls; and the peak's
    last column, as the sweep records it."""
    peak = draw(st.integers(0, n - 1))
    steps = draw(st.lists(st.integers(0, 2), min_size=n - 1, max_size=n - 1))
    seq = [draw(st.integers(0, 3))]
    for s in steps[:peak]:
        seq.append(seq[-1] + s)
    for s in steps[peak:]:
        seq.append(seq[-1] - s)
    last = peak
    while last + 1 < n and seq[last + 1] == seq[peak]:
        last += 1
    return np.array(seq, dtype=np.int16), last


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(unimodal(n), unimodal(n), st.integers(0, n - 1))))
def test_pass_level_is_the_scanned_maximum(case):
    """The sweep's bisection for the highest level at which two stacked runs touch equals the scan."""
    from timm_adl.metrics._levelsets import _pass_level

    (top, p), (bot, q), lo = case
    n = top.size
    for hi in range(lo, n):
        expected = max(min(int(a), int(b)) for a, b in zip(top[lo : hi + 1], bot[lo : hi + 1], strict=True))
        got = _pass_level(top, bot, lo, hi, min(max(p, lo), hi), min(max(q, lo), hi))
        assert got == expected, (top.tolist(), bot.tolist(), lo, hi)
