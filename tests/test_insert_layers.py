"""``insert(..., layer=...)`` with any layer, ``inserted_points`` and ``remove`` on many timm families.

Three kinds of layer on each family: a class with kwargs (``nn.Dropout2d``), a factory that reads the
point's channel count (``timm.layers.SEModule``, it has weights), and a user module with weights.
"""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
from timm.layers import SEModule
from torch import nn

from timm_adl import ADL, InsertedLayer, InsertionPoint, adl_points, insert, inserted_points, remove

# timm's smallest variant of 12 families (random init, 64 px forward)
FAMILIES = [
    'resnet10t',
    'mobilenetv3_small_050',
    'test_efficientnet',
    'regnetx_002',
    'convnext_atto',
    'ghostnet_050',
    'dla46_c',
    'cs3darknet_s',
    'ese_vovnet19b_slim',
    'repvit_m0_9',
    'mobilevit_xxs',
    'edgenext_xx_small',
]
POINTS = ['pool3', 'pool4']


class Adapter(nn.Module):
    """A user's module: a residual 1x1 bottleneck (weights, a buffer), built from the point's channels."""

    def __init__(self, channels: int, hidden: int = 4) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)
        self.register_buffer('scale', torch.full((1,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(torch.relu(self.down(x)))


def _se(point: InsertionPoint) -> nn.Module:
    return SEModule(point.channels, rd_ratio=0.25)


def _adapter(point: InsertionPoint) -> nn.Module:
    return Adapter(point.channels)


KINDS = {
    'class': dict(layer=nn.Dropout2d, p=0.3),
    'factory': dict(layer=_se),
    'user': dict(layer=_adapter),
}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10).eval()


@pytest.mark.slow
@pytest.mark.parametrize('name', FAMILIES)
def test_any_layer_keeps_keys_loads_base_weights_and_removes_exactly(name: str) -> None:
    base = _build(name)
    base_keys = list(base.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = base(x)
    for kind, spec in KINDS.items():
        model = insert(base, after=POINTS, **spec)
        placed = inserted_points(model)
        assert len(placed) == len({p for p in placed}) >= 1, kind
        assert type(model) is type(base)
        new_keys = [k for k in model.state_dict() if any(k.startswith(f'{i.path}.') for i in placed.values())]
        # the original keys, in order; the inserted modules' own tensors under their inserted names
        assert [k for k in model.state_dict() if k not in new_keys] == base_keys, kind
        assert bool(new_keys) == (kind != 'class'), kind
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        assert sorted(missing) == sorted(new_keys) and not unexpected, kind
        with torch.no_grad():
            model(x)  # the inserted layers run
        back = remove(model)
        assert type(back) is type(base) and list(back.state_dict()) == base_keys, kind
        assert not inserted_points(back) and not any(hasattr(m, 'inserted_point') for m in back.modules())
        with torch.no_grad():
            assert torch.equal(back.eval()(x), expected), kind
        assert list(model.state_dict()) == list(pickle.loads(pickle.dumps(model)).state_dict())


def test_inserted_points_say_what_sits_where() -> None:
    base = _build('resnet10t')
    model = insert(base, after=['pool4', 'layer1'], layer=_se)
    placed = inserted_points(model)
    assert set(placed) == {'layer3.0', 'layer1'}
    se = placed['layer3.0']
    assert isinstance(se, InsertedLayer) and isinstance(se.module, SEModule)
    assert se.layer == 'timm.layers.SEModule'
    assert se.kwargs == {'channels': 256, 'rd_ratio': 0.25}  # read from the factory's call
    assert se.path == 'layer3.0_inserted' and model.get_submodule(se.path) is se.module
    assert adl_points(model) == {}  # no ADL here


def test_class_kwargs_per_point_and_dropout_in_train_mode() -> None:
    base = _build('resnet10t')
    model = insert(base, after={'pool3': {'p': 0.5}, 'pool4': {}}, layer=nn.Dropout2d, p=0.2)
    placed = inserted_points(model)
    assert {k: v.kwargs for k, v in placed.items()} == {'layer2.0': {'p': 0.5}, 'layer3.0': {'p': 0.2}}
    assert placed['layer2.0'].layer == 'torch.nn.Dropout2d'
    x = torch.randn(2, 3, 64, 64)
    model.train()
    base.train()
    torch.manual_seed(1)
    with torch.no_grad():
        assert not torch.equal(model(x), base(x))


def test_factory_gets_the_point() -> None:
    seen: list[InsertionPoint] = []

    def factory(point: InsertionPoint) -> nn.Module:
        seen.append(point)
        return nn.Identity()

    insert(_build('resnet10t'), after=['pool3', 'pool4'], layer=factory)
    assert [(p.name, p.channels, p.stride, p.layout) for p in seen] == [
        ('layer2.0', 128, 8, 'NCHW'),
        ('layer3.0', 256, 16, 'NCHW'),
    ]


def test_adl_and_layers_together_then_remove_all() -> None:
    base = _build('convnext_atto')
    model = insert(insert(base, after=['pool3']), after=['pool4'], layer=_adapter)
    assert set(adl_points(model)) == {'stages.1.downsample'}
    assert {i.layer for i in inserted_points(model).values()} == {'timm_adl.ADL', 'Adapter'}
    back = remove(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x), base(x))
    assert not any(isinstance(m, ADL) for m in back.modules())


def test_remove_undoes_a_functional_point() -> None:
    """A GraphModule replaced the block owning the node; ``remove`` puts the original block back."""
    torch.manual_seed(0)
    base = timm.create_model('inception_v3', num_classes=10).eval()
    model = insert(base, after=['Mixed_6a.max_pool2d'], layer=nn.Dropout2d)
    assert type(model.Mixed_6a).__name__ == 'InceptionB' and isinstance(model.Mixed_6a, torch.fx.GraphModule)
    back = remove(model)
    assert type(back.Mixed_6a) is type(base.Mixed_6a)
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(back(x), base(x))


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(layer=nn.Dropout2d, gamma=0.5), 'ADL settings'),
        (dict(p=0.5), r"\['p'\] without layer="),
        (dict(layer=3), 'nn.Module class or a factory'),
        (dict(layer=lambda point: 'no module'), 'must return an nn.Module'),
    ],
)
def test_bad_layers_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        insert(_build('resnet10t'), after=['pool4'], **kwargs)


def test_inserted_models_script() -> None:
    """TorchScript compiles a model with ADL (train mode, same draw as eager) and with another layer."""
    import warnings

    model = insert(_build('resnet10t'), after=['pool3', 'pool4']).train()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit.script is deprecated, still supported
        scripted = torch.jit.script(model)
        torch.jit.script(insert(_build('resnet10t'), after=['pool4'], layer=nn.Dropout2d, p=0.2))
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    expected = model(x)
    torch.manual_seed(0)
    assert torch.equal(scripted(x), expected)
