"""The ADL layer against hand-computed cases and the reference formula."""

import math

import pytest
import torch
from timm.layers import is_notrace_module

from timm_adl import ADL, adl_maps


def _feature_map() -> torch.Tensor:
    # One sample, two channels, 2x2: channel mean is [[1, 2], [3, 4]] (peak 4).
    c0 = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    c1 = torch.tensor([[2.0, 3.0], [4.0, 5.0]])
    return torch.stack([c0, c1]).unsqueeze(0)


def _reference_adl(x: torch.Tensor, u: torch.Tensor, drop_rate: float, gamma: float) -> torch.Tensor:
    """wsolevaluation's formula, written out: the uniform draw ``u`` picks the branch."""
    attention = x.mean(dim=1, keepdim=True)
    importance = torch.sigmoid(attention)
    max_val = attention.view(x.size(0), -1).max(dim=1, keepdim=True)[0].view(x.size(0), 1, 1, 1)
    drop_mask = (attention < max_val * gamma).float()
    random_tensor = torch.floor(u + drop_rate)
    return x * (random_tensor * drop_mask + (1.0 - random_tensor) * importance)


def test_drop_branch_hand_computed():
    x = _feature_map()
    layer = ADL(drop_rate=1.0, gamma=0.7).train()  # threshold 0.7 * 4 = 2.8: cells 3 and 4 dropped
    y = layer(x)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.equal(y, x * mask)


def test_importance_branch_hand_computed():
    x = _feature_map()
    layer = ADL(drop_rate=0.0, gamma=0.7).train()
    y = layer(x)
    sig = [[1 / (1 + math.exp(-v)) for v in row] for row in ([1.0, 2.0], [3.0, 4.0])]
    expected = x * torch.tensor(sig)
    assert torch.allclose(y, expected, atol=1e-7, rtol=0)


def test_threshold_equality_is_dropped():
    # A cell exactly at gamma * max is dropped, as in both references (strict '<' keeps).
    x = torch.tensor([[[[2.0, 4.0]]]])
    drop_mask, _ = adl_maps(x, gamma=0.5)
    assert drop_mask.tolist() == [[[[0.0, 0.0]]]]


def test_per_sample_max():
    x = torch.stack([_feature_map()[0], 10 * _feature_map()[0]])
    drop_mask, _ = adl_maps(x, gamma=0.7)
    assert torch.equal(drop_mask[0], drop_mask[1])


@pytest.mark.parametrize('drop_rate', [0.0, 0.25, 0.75, 1.0])
def test_matches_reference_on_same_draw(drop_rate):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 4)
    layer = ADL(drop_rate=drop_rate, gamma=0.8).train()
    for seed in range(20):
        torch.manual_seed(seed)
        u = torch.rand([])
        torch.manual_seed(seed)
        assert torch.equal(layer(x), _reference_adl(x, u, drop_rate, 0.8))


def test_one_draw_per_forward_for_whole_batch():
    x = torch.rand(16, 3, 4, 4) + 0.1
    layer = ADL(drop_rate=0.5, gamma=0.9).train()
    drop_mask, _ = adl_maps(x, 0.9)
    for seed in range(10):
        torch.manual_seed(seed)
        y = layer(x)
        uses_drop = [torch.equal(y[i], x[i] * drop_mask[i]) for i in range(16)]
        assert all(uses_drop) or not any(uses_drop)


def test_per_sample_option_draws_per_image():
    x = torch.rand(64, 3, 4, 4) + 0.1
    layer = ADL(drop_rate=0.5, gamma=0.9, per_sample=True).train()
    drop_mask, _ = adl_maps(x, 0.9)
    torch.manual_seed(0)
    y = layer(x)
    uses_drop = [torch.equal(y[i], x[i] * drop_mask[i]) for i in range(64)]
    assert any(uses_drop) and not all(uses_drop)


def test_drop_rate_frequency():
    x = torch.rand(1, 3, 4, 4) + 0.1
    layer = ADL(drop_rate=0.75, gamma=0.9).train()
    drop_mask, _ = adl_maps(x, 0.9)
    torch.manual_seed(0)
    n_drop = sum(torch.equal(layer(x), x * drop_mask) for _ in range(2000))
    assert 0.72 < n_drop / 2000 < 0.78


def test_eval_is_identity():
    x = torch.randn(2, 4, 3, 3)
    assert ADL().eval()(x) is x


def test_deterministic_under_manual_seed():
    x = torch.randn(4, 8, 6, 6)
    layer = ADL().train()
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(torch.cat([layer(x) for _ in range(5)]))
    assert torch.equal(outs[0], outs[1])


def test_no_parameters_no_buffers():
    layer = ADL()
    assert list(layer.parameters()) == [] and list(layer.buffers()) == []
    assert layer.state_dict() == {}


def test_extra_repr():
    assert repr(ADL(0.5, 0.8)) == 'ADL(drop_rate=0.5, gamma=0.8)'


@pytest.mark.parametrize(
    'kwargs, bad', [({'drop_rate': 1.5}, '1.5'), ({'drop_rate': -0.1}, '-0.1'), ({'gamma': 0.0}, '0.0')]
)
def test_invalid_settings(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        ADL(**kwargs)


def test_rejects_non_4d_input():
    with pytest.raises(ValueError, match=r'\(2, 3\)'):
        ADL().train()(torch.randn(2, 3))


def test_registered_as_fx_leaf():
    assert is_notrace_module(ADL)


def test_channels_last_and_bf16():
    x = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    layer = ADL(drop_rate=0.0).train()
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_compiles_fullgraph_without_breaks():
    layer = ADL().train()
    explanation = torch._dynamo.explain(layer)(torch.randn(2, 4, 3, 3))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_gradient_flows_through_importance_map():
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    ADL(drop_rate=0.0).train()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
