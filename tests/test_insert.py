"""``timm_adl.insert`` / ``adl_points`` on many timm CNN families (random init, small inputs)."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from timm.layers import create_feature_extractor, get_graph_node_names
from torch import nn

import timm_adl
from timm_adl import ADL, adl_points, insert

# (architecture, kwargs, input size for the forward checks): timm's smallest variant of each family.
ARCHS = [
    ('resnet10t', {}, 64),
    ('legacy_seresnet18', {}, 64),
    ('vgg11', {'mlp_ratio': 0.0625}, 64),
    ('mobilenetv1_100', {}, 64),
    ('mobilenetv2_050', {}, 64),
    ('mobilenetv3_small_050', {}, 64),
    ('test_efficientnet', {}, 64),
    ('regnetx_002', {}, 64),
    ('convnext_atto', {}, 64),
    ('densenet121', {}, 64),
    ('inception_v3', {}, 80),
    ('legacy_xception', {}, 64),
    ('dla46_c', {}, 64),
    ('hrnet_w18_small', {}, 64),
    ('ghostnet_050', {}, 64),
    ('rexnet_100', {}, 64),
    ('dpn48b', {}, 64),
    ('cs3darknet_s', {}, 64),
    ('resnest14d', {}, 64),
    ('skresnet18', {}, 64),
    ('ese_vovnet19b_slim', {}, 64),
    ('nf_regnet_b0', {}, 64),
    ('gernet_s', {}, 64),
    ('resnetv2_18', {}, 64),
    ('repvit_m0_9', {}, 64),
    ('mobilevit_xxs', {}, 64),
    ('edgenext_xx_small', {}, 64),
    ('starnet_s1', {}, 64),
]
POINTS = ['pool3', 'pool4', 'last']
RETRACE = [
    a
    for a in ARCHS
    if a[0]
    in (
        'resnet10t',
        'vgg11',
        'mobilenetv2_050',
        'convnext_atto',
        'inception_v3',
        'regnetx_002',
        'densenet121',
        'hrnet_w18_small',
    )
]


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10, **kwargs).eval()


def _adl_paths(model: nn.Module) -> list[str]:
    return [path for path, m in model.named_modules() if isinstance(m, ADL)]


@pytest.mark.parametrize('name,kwargs,size', ARCHS, ids=[a[0] for a in ARCHS])
def test_insert_keeps_the_model(name: str, kwargs: dict, size: int) -> None:
    base = _build(name, **kwargs)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = insert(base, after=POINTS)

    # the input model is untouched
    assert not _adl_paths(base)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    # same class, same timm attributes and keys (in order); a base checkpoint loads strict
    assert type(model) is type(base)
    for attr in ('pretrained_cfg', 'default_cfg', 'num_classes', 'feature_info'):
        assert getattr(model, attr) == getattr(base, attr)
    assert list(model.state_dict()) == list(base.state_dict())
    model.load_state_dict(base.state_dict(), strict=True)
    assert len(_adl_paths(model)) == len(set(adl_points(model))) >= 2

    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = base(x)
        assert torch.equal(model(x), expected)
        assert torch.equal(model.forward_head(model.forward_features(x)), expected)

    # copies, and the placement survives a rebuild from the base
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            assert torch.equal(clone(x), expected)
    rebuilt = insert(base, after=adl_points(model))
    assert _adl_paths(rebuilt) == _adl_paths(model)
    assert adl_points(rebuilt) == adl_points(model)

    # train mode (last: BatchNorm statistics move): every ADL runs, the output changes
    base_train, model_train = base.train(), model.train()
    calls = []
    for m in model_train.modules():
        if isinstance(m, ADL):
            m.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        torch.manual_seed(1)
        y_base = base_train(x)
        torch.manual_seed(1)
        y_model = model_train(x)
    assert y_model.shape == y_base.shape
    assert len(calls) == len(_adl_paths(model))
    assert not torch.equal(y_model, y_base)


@pytest.mark.parametrize('name,kwargs,size', RETRACE, ids=[a[0] for a in RETRACE])
def test_retrace_hooks_and_checkpointing(name: str, kwargs: dict, size: int) -> None:
    base = _build(name, **kwargs)
    model = insert(base, after=['pool3', 'pool4'])
    # a later FX pass (timm's feature extraction) sees the ADLs as nodes
    nodes = get_graph_node_names(model)[1]
    adl_nodes = [n for n in nodes if n.split('.')[-1].endswith('adl')]
    assert len(adl_nodes) == 2, nodes
    extractor = create_feature_extractor(model, return_nodes=adl_nodes)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = extractor(x)
    assert all(f.ndim == 4 for f in features.values())
    # a forward hook on the block named by a point still fires
    seen = []
    for point in adl_points(model):
        model.get_submodule(point).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(x)
    assert len(seen) == 2
    # gradient checkpointing, where timm supports it for this model
    try:
        base.set_grad_checkpointing(True)
    except (AssertionError, NotImplementedError):
        return
    model.set_grad_checkpointing(True)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.ndim > 1)


def test_insert_resnet_reference_placement() -> None:
    """The wsolevaluation ResNet50 placement (after layer3.0, layer4.0, layer4.2) on a ResNet."""
    base = _build('resnet18')
    model = insert(base, after=['layer3.0', 'layer4.0', 'layer4.1'], gamma=0.8)
    assert _adl_paths(model) == ['layer3.0_adl', 'layer4.0_adl', 'layer4.1_adl']
    assert list(model.layer3._modules) == ['0', '0_adl', '1']
    assert adl_points(model) == {
        p: {'drop_rate': 0.75, 'gamma': 0.8, 'per_sample': False}
        for p in ('layer3.0', 'layer4.0', 'layer4.1')
    }
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


def test_per_point_settings_and_aliases() -> None:
    base = _build('resnet18')
    model = insert(
        base, after={'pool4': dict(gamma=0.8), 'last': {}, 'layer2.0': dict(per_sample=True)}, drop_rate=0.5
    )
    points = adl_points(model)
    assert points == {
        'layer2.0': {'drop_rate': 0.5, 'gamma': 0.9, 'per_sample': True},
        'layer3.0': {'drop_rate': 0.5, 'gamma': 0.8, 'per_sample': False},
        'layer4.1': {'drop_rate': 0.5, 'gamma': 0.9, 'per_sample': False},
    }
    import json

    assert json.loads(json.dumps(points)) == points


def test_patterns_node_names_and_functional_points() -> None:
    base = _build('resnet18')
    assert len(_adl_paths(insert(base, after=['layer4.*']))) == 2
    assert len(_adl_paths(insert(base, after=['layer*.0']))) == 4
    # FX node names, in both the dotted (torchvision) and the flat (torch.fx) spelling
    assert adl_points(insert(base, after=['layer3.0.act2'])) == adl_points(
        insert(base, after=['layer3_0_act2'])
    )
    # a functional op inside a block: the block is re-traced locally, keys stay, the class stays
    inception = _build('inception_v3')
    model = insert(inception, after=['Mixed_6a.max_pool2d', 'Mixed_5d'])
    assert type(model) is type(inception)
    assert list(model.state_dict()) == list(inception.state_dict())
    assert set(adl_points(model)) == {'Mixed_6a.max_pool2d', 'Mixed_5d'}
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), inception(x))


def test_errors() -> None:
    base = _build('resnet18')
    with pytest.raises(ValueError, match=r"'layer3\.O'.*layer3\.0"):
        insert(base, after=['layer3.O'])
    with pytest.raises(ValueError, match='pool9'):
        insert(base, after=['pool9'])
    with pytest.raises(ValueError, match='not a 4-D'):
        insert(base, after=['fc'])
    with pytest.raises(ValueError, match='gamma'):
        insert(base, after={'pool4': dict(gamma=1.5)})
    with pytest.raises(ValueError, match='unknown ADL settings'):
        insert(base, after={'pool4': dict(threshold=0.5)})
    with pytest.raises(ValueError, match='matches no module'):
        insert(base, after=['stages.*'])
    with pytest.raises(ValueError, match='different ADL settings'):
        insert(base, after={'pool4': dict(gamma=0.5), 'layer3.0': dict(gamma=0.6)})


class _Gate(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class _GatedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        self.gate = _Gate()
        self.down = nn.MaxPool2d(2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.gate(self.stem(x))).mean((2, 3)))


class _GatedRoot(_GatedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if x.sum() > 0:
            x = self.down(x)
        return self.head(x.mean((2, 3)))


def test_untraceable_submodule_is_kept_whole() -> None:
    model = _GatedNet().eval()
    new = insert(model, after=['pool1', 'pool2'])
    assert adl_points(new).keys() == {'stem', 'down'}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(new(x), model(x))


def test_untraceable_model_falls_back_to_module_paths() -> None:
    model = _GatedRoot().eval()
    with pytest.raises(ValueError, match=r'cannot trace _GatedRoot.*module-path surgery.*pool1'):
        insert(model, after=['pool1'])
    new = insert(model, after=['stem'])
    assert _adl_paths(new) == ['stem.adl']
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(new(x), model(x))


def test_insert_is_exported() -> None:
    assert timm_adl.insert is insert
    assert timm_adl.adl_points is adl_points
