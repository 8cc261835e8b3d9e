"""Hub round trip of models with inserted non-ADL layers, and the rule that a config never imports code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import SEModule
from torch import nn

import timm_adl
from timm_adl import hub, insert, inserted_points


class Adapter(nn.Module):
    """A user's layer: its class is not in torch.nn / timm.layers / timm_adl."""

    def __init__(self, channels: int, hidden: int = 4) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


def _model() -> nn.Module:
    torch.manual_seed(0)
    base = timm.create_model('resnet10t', num_classes=4)
    model = insert(base, after=['pool3'], gamma=0.8)
    model = insert(model, after=['layer1'], layer=nn.Dropout2d, p=0.2)
    model = insert(model, after=['pool4'], layer=lambda p: SEModule(p.channels, rd_ratio=0.5))
    model = insert(model, after=['pool5'], layer=lambda p: Adapter(p.channels, hidden=3))
    with torch.no_grad():  # weights the rebuilt model can only have from the checkpoint
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


@pytest.fixture(scope='module')
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = _model()
    return model, hub.save_pretrained(model, tmp_path_factory.mktemp('hub') / 'inserted')


def test_config_records_class_names_and_kwargs(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'adl_inserted'
    assert config['model_args']['inserted_layers'] == {
        'layer1': {'layer': 'torch.nn.Dropout2d', 'kwargs': {'p': 0.2}},
        'layer3.0': {'layer': 'timm.layers.SEModule', 'kwargs': {'channels': 256, 'rd_ratio': 0.5}},
        'layer4.0': {'layer': 'Adapter', 'kwargs': {'channels': 512, 'hidden': 3}},
    }
    assert config['model_args']['adl_points'] == {
        'layer2.0': {'drop_rate': 0.75, 'gamma': 0.8, 'per_sample': False}
    }
    assert 'layers' not in config['model_args']


def test_load_rebuilds_every_layer_with_the_user_class_passed_in(saved: tuple[nn.Module, Path]) -> None:
    model, folder = saved
    loaded, _ = timm_adl.load(folder, layers={'Adapter': Adapter})
    assert {p: (i.layer, i.kwargs) for p, i in inserted_points(loaded).items()} == {
        p: (i.layer, i.kwargs) for p, i in inserted_points(model).items()
    }
    assert list(loaded.state_dict()) == list(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_user_class_not_passed_in_is_refused_with_how_to_pass_it(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    with pytest.raises(
        ValueError, match=r"'Adapter' is not in torch.nn, timm.layers, timm_adl.*layers=\{'Adapter'"
    ):
        timm_adl.load(folder)


@pytest.mark.parametrize(
    'name', ['os.system', 'subprocess.Popen', 'torch.nn.modules.conv.Conv2d', 'builtins.eval']
)
def test_a_config_naming_any_other_module_imports_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    real_import = __builtins__['__import__'] if isinstance(__builtins__, dict) else __builtins__.__import__

    def spy(module: str, *args, **kwargs):
        imported.append(module)
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr('builtins.__import__', spy)
    with pytest.raises(ValueError, match='pass the class yourself'):
        timm.create_model(
            'adl_inserted',
            base_architecture='resnet10t',
            inserted_layers={'layer1': {'layer': name, 'kwargs': {}}},
        )
    assert name.rpartition('.')[0] not in imported


def test_a_factory_with_unrecordable_arguments_cannot_be_saved(tmp_path: Path) -> None:
    base = timm.create_model('resnet10t', num_classes=4)
    model = insert(base, after=['pool4'], layer=lambda p: SEModule(p.channels, act_layer=nn.GELU))
    assert inserted_points(model)['layer3.0'].kwargs is None
    with pytest.raises(ValueError, match='insert it with layer=<class> and JSON kwargs'):
        hub.save_pretrained(model, tmp_path / 'se')
    assert not (tmp_path / 'se').exists()
