"""ADL on channels-last (N, H, W, C) maps and (N, L, C) grid tokens: the (N, C, H, W) layer, permuted."""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.layers import is_notrace_module

from timm_adl import ADL


def _nchw(n: int = 3, c: int = 5, h: int = 4, w: int = 6) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))


def _run(layer: ADL, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # the same uniform draw for every layout
    return layer.train()(x)


@pytest.mark.parametrize('per_sample', [False, True])
@pytest.mark.parametrize('drop_rate', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_channels_last_equals_nchw_permuted(drop_rate: float, per_sample: bool, seed: int) -> None:
    x = _nchw()
    expected = _run(ADL(drop_rate, 0.8, per_sample), x, seed)
    got = _run(ADL(drop_rate, 0.8, per_sample, layout='NHWC'), x.permute(0, 2, 3, 1), seed)
    assert torch.equal(got, expected.permute(0, 2, 3, 1))


@pytest.mark.parametrize('prefix', [0, 1, 5])
@pytest.mark.parametrize('per_sample', [False, True])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_tokens_equal_nchw_permuted_and_prefix_passes(prefix: int, per_sample: bool, seed: int) -> None:
    x = _nchw()
    n, c = x.shape[:2]
    grid = x.flatten(2).transpose(1, 2)  # (N, H*W, C), row-major as timm's patch embedding
    cls = torch.randn(n, prefix, c) * 100  # huge prefix tokens must not move the attention peak
    tokens = torch.cat([cls, grid], dim=1)
    expected = _run(ADL(0.5, 0.8, per_sample), x, seed)
    got = _run(ADL(0.5, 0.8, per_sample, layout='NLC', num_prefix_tokens=prefix), tokens, seed)
    assert torch.equal(got[:, :prefix], cls)
    assert torch.equal(got[:, prefix:], expected.flatten(2).transpose(1, 2))


@pytest.mark.parametrize(
    'layout, shape', [('NCHW', (2, 3, 4, 4)), ('NHWC', (2, 4, 4, 3)), ('NLC', (2, 17, 3))]
)
def test_identity_in_eval_and_zero_parameters(layout: str, shape: tuple[int, ...]) -> None:
    layer = ADL(layout=layout, num_prefix_tokens=1 if layout == 'NLC' else 0).eval()
    x = torch.randn(shape)
    assert layer(x) is x
    assert not list(layer.parameters()) and not list(layer.buffers())
    assert is_notrace_module(ADL)


@pytest.mark.parametrize('kwargs, shape', [({}, (2, 3, 4, 4)), ({'layout': 'NHWC'}, (2, 4, 4, 3)),
                                           ({'layout': 'NLC', 'num_prefix_tokens': 1}, (2, 17, 3)),
                                           ({'per_sample': True}, (2, 3, 4, 4))])  # fmt: skip
def test_torchscript_matches_eager_in_both_modes(kwargs: dict, shape: tuple[int, ...]) -> None:
    layer = ADL(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit.script is deprecated, still supported
        scripted = torch.jit.script(layer)
    x = torch.randn(shape)
    assert torch.equal(_run(scripted, x, 3), _run(layer, x, 3))
    assert torch.equal(scripted.eval()(x), x)
    with pytest.raises(Exception, match=r'got shape \(2, 3\)'):
        scripted(torch.randn(2, 3))


@pytest.mark.parametrize('kwargs, shape', [({'layout': 'NHWC'}, (2, 4, 4, 3)),
                                           ({'layout': 'NLC', 'num_prefix_tokens': 2}, (2, 18, 3))])  # fmt: skip
def test_token_layouts_compile_without_graph_breaks(kwargs: dict, shape: tuple[int, ...]) -> None:
    explanation = torch._dynamo.explain(ADL(**kwargs).train())(torch.randn(shape))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize('kwargs, bad', [({'layout': 'HWC'}, 'HWC'), ({'num_prefix_tokens': 1}, 'NLC'),
                                         ({'layout': 'NLC', 'num_prefix_tokens': -1}, '-1')])  # fmt: skip
def test_bad_layout_settings(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        ADL(**kwargs)


def test_wrong_rank_names_the_layout() -> None:
    with pytest.raises(ValueError, match=r'3-D feature map \(N, L, C\), got shape \(2, 3, 4, 4\)'):
        ADL(layout='NLC').train()(torch.randn(2, 3, 4, 4))


def test_module_methods_still_work() -> None:
    """``.to()`` / ``.double()`` go through ``nn.Module._apply``, which ADL must not shadow."""
    layer = ADL(layout='NLC', num_prefix_tokens=1).to(torch.float64).double()
    assert layer(torch.randn(2, 5, 3, dtype=torch.float64)).dtype == torch.float64
