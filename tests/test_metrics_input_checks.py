"""Inputs the evaluators used to take without a word (issue 12's hostile-input campaign), now refused."""

import numpy as np
import pytest
import torch

from timm_adl.metrics import BoxEvaluator, WSOLEvaluator


def _maps(n: int = 2, size: int = 8) -> np.ndarray:
    m = np.zeros((n, size, size), dtype=np.float32)
    m[:, 2:5, 2:5] = 1.0
    return m


@pytest.mark.parametrize('cls', [BoxEvaluator, WSOLEvaluator])
@pytest.mark.parametrize('value', [0.5, 0.3, 1, 1.0])
def test_fractional_iou_thresholds_are_refused_with_a_percent_hint(cls, value):
    # 0.5 used to be read as 0.5 %: every box with the slightest overlap counted as a hit
    with pytest.raises(ValueError, match=r'percentages.*did you mean') as err:
        cls(iou_thresholds=[value])
    assert repr(value) in str(err.value)


def test_percent_iou_thresholds_are_still_accepted():
    assert BoxEvaluator(iou_thresholds=[2, 50, 100]).iou_thresholds == (2, 50, 100)


def test_gt_boxes_beyond_the_score_map_are_refused_naming_the_image():
    # boxes at the original image's size (not resized to the 8x8 map) used to score 0 % silently
    ev = BoxEvaluator(num_threads=1)
    with pytest.raises(ValueError, match=r'gt_boxes\[1\].*outside the 8x8 score map.*resize_boxes'):
        ev.update(_maps(), [np.array([[2, 2, 4, 4]]), np.array([[10, 20, 300, 200]])])
    wsol = WSOLEvaluator(num_threads=1)
    with pytest.raises(ValueError, match=r'gt_boxes\[0\].*outside'):
        wsol.update(_maps(1), None, [np.array([[0, 0, 9, 3]])], torch.zeros(1, 2), torch.tensor([0]))


def test_a_box_touching_the_edge_is_on_the_map():
    # the reference's resize gives x1 = W for a box ending at the image's edge: that one is kept
    ev = BoxEvaluator(num_threads=1)
    ev.update(_maps(), [np.array([[0, 0, 8, 8]]), np.array([[2, 2, 4, 4]])])
    assert ev.compute()['num_images'] == 2


@pytest.mark.parametrize('labels', [[0, 2], [0, 5], [-1, 0]])
def test_wsol_evaluator_refuses_labels_outside_the_logits(labels):
    ev = WSOLEvaluator(num_threads=1)
    with pytest.raises(ValueError, match=r'labels\[\d\].*must be in \[0, 2\)'):
        ev.update(_maps(), None, [np.array([[2, 2, 4, 4]])] * 2, torch.zeros(2, 2), torch.tensor(labels))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_wsol_evaluator_refuses_non_finite_logits(bad):
    logits = torch.zeros(2, 3)
    logits[1, 2] = bad
    ev = WSOLEvaluator(num_threads=1)
    with pytest.raises(ValueError, match=r'logits\[1\].*NaN or infinite'):
        ev.update(_maps(), None, [np.array([[2, 2, 4, 4]])] * 2, logits, torch.tensor([0, 1]))


def test_wsol_evaluator_refuses_fractional_labels():
    ev = WSOLEvaluator(num_threads=1)
    with pytest.raises(ValueError, match='whole class indices'):
        ev.update(_maps(), None, [np.array([[2, 2, 4, 4]])] * 2, torch.zeros(2, 2), np.array([0.0, 0.5]))
