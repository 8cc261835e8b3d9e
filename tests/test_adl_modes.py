"""ADL's two components switched on and off (the paper's Table 1 lower part): hand-computed maps, the same
draw in every mode, and the modes recorded by insert / adl_points / the Hub config and card."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

import timm_adl
from timm_adl import ADL, adl_points, hub, insert

MODES = [
    pytest.param({}, id='both'),
    pytest.param({'use_drop': False}, id='importance-only'),
    pytest.param({'use_importance': False}, id='drop-only'),
]


def _x() -> torch.Tensor:
    """(1, 2, 2, 2): attention (channel mean) [[1, 2], [2, 4]], peak 4."""
    return torch.tensor([[[[0.0, 2.0], [4.0, 8.0]], [[2.0, 2.0], [0.0, 0.0]]]])


def _sigmoid(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


# gamma 0.9: threshold 3.6, so only the peak cell (1, 1) is dropped
DROPPED = torch.tensor([[[[0.0, 2.0], [4.0, 0.0]], [[2.0, 2.0], [0.0, 0.0]]]])
WEIGHTS = torch.tensor([[_sigmoid(1.0), _sigmoid(2.0)], [_sigmoid(2.0), _sigmoid(4.0)]])
WEIGHED = _x() * WEIGHTS


@pytest.mark.parametrize(
    ('kwargs', 'drop_rate', 'expected'),
    [
        ({}, 1.0, DROPPED),
        ({}, 0.0, WEIGHED),
        ({'use_drop': False}, 1.0, _x()),  # importance only: a drop draw is the identity
        ({'use_drop': False}, 0.0, WEIGHED),
        ({'use_importance': False}, 1.0, DROPPED),
        ({'use_importance': False}, 0.0, _x()),  # drop only: an importance draw is the identity
    ],
)
def test_hand_computed_branches(kwargs: dict, drop_rate: float, expected: torch.Tensor) -> None:
    layer = ADL(drop_rate, 0.9, **kwargs).train()
    got = layer(_x())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('per_sample', [False, True])
def test_same_draws_in_every_mode_each_branch_switched_as_asked(per_sample: bool) -> None:
    """Seeded alike, the three modes pick the same branch every step and leave the generator alike."""
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    drop_mask, importance_map = timm_adl.adl_maps(x, 0.8)
    dropped, weighed = x * drop_mask, x * importance_map
    outputs, after = {}, {}
    for name, kwargs in (('both', {}), ('imp', {'use_drop': False}), ('drop', {'use_importance': False})):
        layer = ADL(0.5, 0.8, per_sample, **kwargs).train()
        torch.manual_seed(123)
        outputs[name] = [layer(x) for _ in range(12)]
        after[name] = torch.rand(4)
    assert torch.equal(after['both'], after['imp']) and torch.equal(after['both'], after['drop'])
    seen = set()
    for both, imp, drop in zip(outputs['both'], outputs['imp'], outputs['drop'], strict=True):
        for i in range(x.shape[0]):  # per image: per_sample draws differ inside a batch
            drew_drop = torch.equal(both[i], dropped[i])
            assert drew_drop != torch.equal(both[i], weighed[i])  # this x tells the branches apart
            seen.add(drew_drop)
            assert torch.equal(imp[i], x[i] if drew_drop else weighed[i])
            assert torch.equal(drop[i], dropped[i] if drew_drop else x[i])
    assert seen == {True, False}  # both branches were exercised


def test_default_is_todays_layer_bit_for_bit() -> None:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    explicit = [ADL(0.5, 0.8, use_drop=True, use_importance=True).train()(x) for _ in range(6)]
    torch.manual_seed(5)
    default = [ADL(0.5, 0.8).train()(x) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(explicit, default, strict=True))


@pytest.mark.parametrize('kwargs', MODES)
def test_eval_is_identity_and_torchscript_matches_eager(kwargs: dict) -> None:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    layer = ADL(0.5, 0.8, **kwargs)
    scripted = torch.jit.script(ADL(0.5, 0.8, **kwargs))
    for seed in range(4):
        torch.manual_seed(seed)
        eager = layer.train()(x)
        torch.manual_seed(seed)
        assert torch.equal(scripted.train()(x), eager)
    assert layer.eval()(x) is x
    assert torch.equal(scripted.eval()(x), x)


@pytest.mark.parametrize('kwargs', MODES)
@pytest.mark.parametrize('seed', [0, 3])
def test_layouts_and_prefix_tokens_match_nchw(kwargs: dict, seed: int) -> None:
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(seed)
    expected = ADL(0.5, 0.8, **kwargs).train()(x)
    torch.manual_seed(seed)
    nhwc = ADL(0.5, 0.8, layout='NHWC', **kwargs).train()(x.permute(0, 2, 3, 1))
    assert torch.equal(nhwc.permute(0, 3, 1, 2), expected)
    prefix = torch.randn(2, 1, 5)
    tokens = torch.cat([prefix, x.flatten(2).transpose(1, 2)], dim=1)
    torch.manual_seed(seed)
    nlc = ADL(0.5, 0.8, layout='NLC', num_prefix_tokens=1, **kwargs).train()(tokens)
    assert torch.equal(nlc[:, :1], prefix)
    assert torch.equal(nlc[:, 1:].transpose(1, 2).reshape(x.shape), expected)


def test_both_off_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r'^ADL needs use_drop or use_importance .*got both False$'):
        ADL(use_drop=False, use_importance=False)


def test_extra_repr_shows_only_switched_off_components() -> None:
    assert repr(ADL()) == 'ADL(drop_rate=0.75, gamma=0.9)'
    assert repr(ADL(use_drop=False)) == 'ADL(drop_rate=0.75, gamma=0.9, use_drop=False)'
    assert repr(ADL(use_importance=False)) == 'ADL(drop_rate=0.75, gamma=0.9, use_importance=False)'


# -- recorded by surgery and the Hub ---------------------------------------------------------------------
def _base() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model('resnet10t', num_classes=3)


def test_insert_and_adl_points_record_the_modes() -> None:
    model = insert(_base(), after=['layer3', 'layer4'], use_drop=False)
    assert adl_points(model) == {
        p: {'drop_rate': 0.75, 'gamma': 0.9, 'per_sample': False, 'use_drop': False}
        for p in ('layer3', 'layer4')
    }
    mixed = insert(_base(), after={'layer3': {'use_importance': False}, 'layer4': {}})
    assert adl_points(mixed) == {
        'layer3': {'drop_rate': 0.75, 'gamma': 0.9, 'per_sample': False, 'use_importance': False},
        'layer4': {'drop_rate': 0.75, 'gamma': 0.9, 'per_sample': False},  # default: as before the modes
    }
    rebuilt = insert(_base(), after=adl_points(mixed))
    assert adl_points(rebuilt) == adl_points(mixed)
    assert [m.use_importance for m in rebuilt.modules() if isinstance(m, ADL)] == [False, True]


def test_insert_refuses_both_off_and_modes_for_another_layer() -> None:
    with pytest.raises(ValueError, match='got both False'):
        insert(_base(), after=['layer4'], use_drop=False, use_importance=False)
    with pytest.raises(ValueError, match=r'use_drop.*are ADL settings, not for layer=Dropout2d'):
        insert(_base(), after=['layer4'], layer=torch.nn.Dropout2d, use_drop=False)


@pytest.mark.parametrize(
    'make',
    [
        pytest.param(lambda: insert(_base(), after=['layer4'], use_importance=False), id='inserted'),
        pytest.param(
            lambda: timm.create_model(
                'mobilenetv1_adl', num_classes=3, adl_after={'blocks.4.1': {'use_drop': False}}
            ),
            id='registered',
        ),
    ],
)
def test_hub_round_trip_keeps_the_modes(make, tmp_path) -> None:
    torch.manual_seed(0)
    model = make().eval()
    folder = hub.save_pretrained(model, tmp_path / 'saved')
    config = json.loads((folder / 'config.json').read_text())
    assert config['timm_adl']['adl_points'] == adl_points(model)
    assert any(
        not s.get('use_drop', True) or not s.get('use_importance', True) for s in adl_points(model).values()
    )
    card = (folder / 'README.md').read_text()
    assert '| use_drop | use_importance |' in card
    loaded, _ = timm_adl.load(folder)
    assert adl_points(loaded) == adl_points(model)
    x = torch.randn(1, 3, 64, 64)
    loaded.train()
    model.train()
    torch.manual_seed(7)
    a = model(x)
    torch.manual_seed(7)
    assert torch.equal(loaded(x), a)  # same weights, same ADL modes, same draw


# -- training config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ('recipe', 'expected_points'),
    [
        pytest.param({'model': 'resnet10t', 'adl': {'after': ['layer3', 'layer4']}}, 2, id='inserted'),
        pytest.param({'model': 'mobilenetv1_adl', 'adl': {}}, 3, id='registered-adl-model'),
    ],
)
def test_build_model_passes_the_modes_to_every_adl(recipe: dict, expected_points: int) -> None:
    from timm_adl.train import load_config
    from timm_adl.train.distributed import DistInfo
    from timm_adl.train.engine import build_model

    recipe = {**recipe, 'adl': {**recipe['adl'], 'use_importance': False}}
    model, _ = build_model(load_config(recipe), 3, DistInfo())
    layers = [m for m in model.modules() if isinstance(m, ADL)]
    assert len(layers) == expected_points
    assert all(m.use_drop and not m.use_importance for m in layers)
    assert all(s.get('use_importance') is False for s in adl_points(model).values())
