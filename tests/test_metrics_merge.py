"""Evaluators merge exactly, and every evaluator's typed result has the same shape."""

import copy
import json

import numpy as np
import pytest
import torch

from timm_adl.metrics import METRIC_NAMES, BoxEvaluator, MaskEvaluator, WSOLEvaluator, WSOLResult


def _batch(seed: int, n: int = 6, size: int = 24):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    maps, boxes = [], []
    for _ in range(n):
        cx, cy = rng.integers(4, size - 4, 2)
        m = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(2, 6) ** 2)) + rng.uniform(
            0, 0.2, (size, size)
        )
        maps.append((m - m.min()) / (m.max() - m.min()))
        x0, y0 = rng.integers(0, size // 2, 2)
        boxes.append(np.array([[x0, y0, x0 + rng.integers(2, size // 2), y0 + rng.integers(2, size // 2)]]))
    logits = torch.from_numpy(rng.normal(size=(n, 3)))
    labels = torch.from_numpy(rng.integers(0, 3, n))
    return np.stack(maps).astype(np.float32), boxes, logits, labels


def _feed(ev, batch):
    maps, boxes, logits, labels = batch
    if isinstance(ev, WSOLEvaluator):
        ev.update(maps, None, boxes, logits, labels)
    else:
        ev.update(maps, boxes)


def _same(a: dict, b: dict) -> None:
    assert json.dumps(_plain(a), sort_keys=True) == json.dumps(_plain(b), sort_keys=True)


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@pytest.mark.parametrize(
    'make',
    [
        lambda: BoxEvaluator(num_threads=1),
        lambda: BoxEvaluator(multi_contour=True, num_threads=2),
        lambda: WSOLEvaluator(num_threads=2),
    ],
)
def test_merge_of_shards_equals_one_evaluator(make):
    batches = [_batch(s) for s in range(4)]
    whole = make()
    for b in batches:
        _feed(whole, b)
    left, right = make(), make()
    for b in batches[:1]:
        _feed(left, b)
    for b in batches[1:]:
        _feed(right, b)
    merged = left.merge(right)
    _same(merged.compute(), whole.compute())
    assert merged.result().to_dict() == whole.result().to_dict()


def test_merge_refuses_other_settings():
    with pytest.raises(ValueError, match='settings differ'):
        BoxEvaluator(iou_thresholds=(50,)).merge(BoxEvaluator())
    with pytest.raises(ValueError, match='settings differ'):
        BoxEvaluator().merge(BoxEvaluator(multi_contour=True))
    with pytest.raises(ValueError, match='settings differ'):
        WSOLEvaluator().merge(WSOLEvaluator(cam_threshold=0.3))


def test_mask_evaluator_merges():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 8, 8)).astype(np.float32)
    masks = rng.random((4, 8, 8)) > 0.5
    whole = MaskEvaluator()
    whole.update(maps, masks)
    a, b = MaskEvaluator(), MaskEvaluator()
    a.update(maps[:1], masks[:1])
    b.update(maps[1:], masks[1:])
    assert a.merge(b).compute()['pxap'] == whole.compute()['pxap']
    assert a.result().pxap == whole.compute()['pxap'] and a.result().num_images == 4


def test_results_have_one_shape_and_match_compute():
    batch = _batch(7)
    box, box_v2, wsol = BoxEvaluator(num_threads=1), BoxEvaluator(multi_contour=True), WSOLEvaluator()
    for ev in (box, box_v2, wsol):
        _feed(ev, batch)
    c_box, c_v2, c_wsol = box.compute(), box_v2.compute(), wsol.compute()
    r_box, r_v2, r_wsol = box.result(), box_v2.result(), wsol.result()
    for r in (r_box, r_v2, r_wsol):
        assert isinstance(r, WSOLResult) and set(r.metrics()) <= set(METRIC_NAMES)
        json.dumps(r.to_dict())  # JSON-ready as it is
    # MaxBoxAcc (IoU 50, largest contour) is a float in every result that has it
    assert r_box.max_box_acc == c_box['max_box_acc'][50] and r_box.max_box_acc_v2 is None
    assert r_v2.max_box_acc_v2 == c_v2['max_box_acc_v2'] and r_v2.max_box_acc is None
    assert r_wsol.max_box_acc == c_wsol['max_box_acc'] and r_wsol.max_box_acc_v2 == c_wsol['max_box_acc_v2']
    assert r_wsol.metrics() == {k: c_wsol[k] for k in METRIC_NAMES if k != 'pxap'}
    # the WSOL evaluator's every-contour curves are the multi-contour BoxEvaluator's
    assert r_wsol.box_acc_v2.best == r_v2.box_acc_v2.best
    assert r_wsol.to_dict()['metrics']['max_box_acc_v2@50'] == c_wsol['max_box_acc_v2_per_iou'][50]


def test_pickled_evaluator_keeps_merging():
    a, b = WSOLEvaluator(num_threads=2), WSOLEvaluator(num_threads=1)
    _feed(a, _batch(1))
    _feed(b, _batch(2))
    c = copy.deepcopy(a).merge(b)
    assert c.num_images == 12 and a.num_images == 6
