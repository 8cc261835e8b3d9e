"""The one model loader (``timm_adl.hub.load_model``): a weights file, a run folder, a save_pretrained folder
and an offline Hub cache give the same model, its input settings, and where each setting came from."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_adl
from timm_adl.hub import CorruptCheckpointError, LoadedModel, load_model, save_pretrained
from timm_adl.train import load_config
from timm_adl.train.checkpoint import data_config_metadata, save_weights
from timm_adl.train.config import save_config
from timm_adl.train.run_layout import RunLayout

sys.path.insert(0, str(Path(__file__).parent))
from test_hub import hf_cache, place_in_cache  # noqa: F401  (the offline cache fixture)

MODEL_KWARGS = dict(channels=[8, 16, 32, 64], stem_width=8)
MEAN, STD, SIZE = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 48


def _recipe(**over) -> dict:
    recipe = dict(
        model='resnet10t',
        model_kwargs=MODEL_KWARGS,
        num_classes=3,
        img_size=SIZE,
        data=dict(name='wsol-metadata', root='/nowhere', mean=list(MEAN), std=list(STD)),
        adl=dict(after=['layer3'], drop_rate=0.5, gamma=0.8),
        cam_method='gradcam',
    )
    recipe.update(over)
    return recipe


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory) -> Path:
    """A run folder as `timm-adl train` leaves it: config.yaml and best/last weights recording their input."""
    folder = tmp_path_factory.mktemp('run')
    cfg = load_config(_recipe(output_dir=str(folder)))
    model = timm_adl.insert(
        timm.create_model('resnet10t', num_classes=3, **MODEL_KWARGS),
        after=['layer3'],
        drop_rate=0.5,
        gamma=0.8,
    )
    layout = RunLayout(folder)
    save_config(cfg, layout.config)
    meta = data_config_metadata(MEAN, STD, SIZE)
    save_weights(model.state_dict(), layout.best, meta)
    save_weights(model.state_dict(), layout.last, meta)
    return folder


def test_run_folder_gives_model_settings_and_sources(run_dir):
    loaded = load_model(run_dir)
    assert isinstance(loaded, LoadedModel) and not loaded.model.training
    assert loaded.architecture == 'resnet10t' and loaded.model.num_classes == 3
    assert loaded.input_size == (3, SIZE, SIZE) and loaded.mean == MEAN and loaded.std == STD
    assert loaded.cam_method == 'gradcam' and list(loaded.adl_points) == ['layer3']
    assert loaded.adl_points['layer3']['gamma'] == 0.8
    assert loaded.sources == {
        'mean': 'checkpoint metadata',
        'std': 'checkpoint metadata',
        'input_size': 'checkpoint metadata',
        'cam_method': 'run config.yaml',
        'architecture': 'run config.yaml',
        'label_names': 'none',
        'adl_points': 'run config.yaml',
    }
    assert loaded.files['checkpoint metadata'] == str(run_dir / 'best.safetensors')
    assert loaded.files['run config.yaml'] == str(run_dir / 'config.yaml')
    assert loaded.describe('mean') == f'checkpoint metadata ({run_dir / "best.safetensors"})'
    assert load_model(run_dir, weights='last').weights_file == str(run_dir / 'last.safetensors')
    model, labels = loaded  # unpacks as timm_adl.load always did
    assert model is loaded.model and labels is None


def test_weights_file_and_run_folder_are_the_same_model(run_dir):
    a = load_model(run_dir)
    b = load_model(run_dir / 'best.safetensors')
    assert torch.equal(_outputs(a.model), _outputs(b.model))
    assert a.sources == b.sources


def test_overrides_win_and_say_so(run_dir):
    loaded = load_model(run_dir, img_size=64, mean=(0.1, 0.2, 0.3), cam_method='cam')
    assert loaded.input_size == (3, 64, 64) and loaded.mean == (0.1, 0.2, 0.3) and loaded.std == STD
    assert (
        loaded.sources['input_size'] == loaded.sources['mean'] == loaded.sources['cam_method'] == 'override'
    )
    assert loaded.sources['std'] == 'checkpoint metadata'


def test_older_weights_fall_back_to_the_run_config_then_pretrained_cfg(run_dir, tmp_path):
    old = tmp_path / 'old'
    old.mkdir()
    save_file(load_file(str(run_dir / 'best.safetensors')), str(old / 'best.safetensors'), {'format': 'pt'})
    shutil.copyfile(run_dir / 'config.yaml', old / 'config.yaml')
    loaded = load_model(old / 'best.safetensors')
    assert loaded.mean == MEAN and loaded.sources['mean'] == 'run config.yaml'
    assert loaded.input_size == (3, SIZE, SIZE) and loaded.sources['input_size'] == 'run config.yaml'
    # alone, the weights need a model name; the settings are the architecture's
    alone = tmp_path / 'alone.safetensors'
    shutil.copyfile(old / 'best.safetensors', alone)
    with pytest.raises(ValueError, match=r'no config\.yaml beside it'):
        load_model(alone)
    bare = load_model(alone, model='resnet10t', model_kwargs=MODEL_KWARGS)
    assert bare.sources['mean'] == 'pretrained_cfg' and bare.sources['architecture'] == 'override'
    assert bare.adl_points == {} and bare.cam_method == 'cam' and bare.sources['cam_method'] == 'default'
    # a config of another model beside the weights is ignored, with a note saying why
    other = tmp_path / 'other'
    other.mkdir()
    shutil.copyfile(alone, other / 'best.safetensors')
    (other / 'config.yaml').write_text((old / 'config.yaml').read_text().replace('resnet10t', 'resnet18'))
    noted = load_model(other / 'best.safetensors', model='resnet10t', model_kwargs=MODEL_KWARGS)
    assert noted.run_config is None and any('resnet18 run, not resnet10t' in n for n in noted.notes)


def test_save_pretrained_folder_and_offline_hub_cache(run_dir, tmp_path, hf_cache):  # noqa: F811
    trained = load_model(run_dir)
    folder = save_pretrained(
        trained.model,
        tmp_path / 'hub',
        {},
        None,
        label_names=['a', 'b', 'c'],
        data_config={'input_size': [3, SIZE, SIZE], 'mean': list(MEAN), 'std': list(STD)},
    )
    local = load_model(folder)
    assert local.label_names == ['a', 'b', 'c'] and local.mean == MEAN and local.input_size == (3, SIZE, SIZE)
    assert local.sources['mean'] == 'config.json' and local.sources['label_names'] == 'config.json'
    assert local.files['config.json'] == str(folder / 'config.json')
    assert local.adl_points == trained.adl_points
    commit = place_in_cache(folder, hf_cache, 'acme/loader')
    hub = load_model('acme/loader')
    assert hub.sources == local.sources and hub.label_names == ['a', 'b', 'c']
    assert Path(hub.files['config.json']).parent.name == commit
    assert torch.equal(_outputs(hub.model), _outputs(trained.model))
    # timm_adl.load is the same loader, for Hub ids and save_pretrained folders only
    assert timm_adl.load('acme/loader').sources == hub.sources
    with pytest.raises(ValueError, match='is a file'):
        timm_adl.load(run_dir / 'best.safetensors')
    with pytest.raises(ValueError, match='differs from the architecture'):
        load_model('acme/loader', model='resnet18')


def test_damaged_and_missing_weights_are_named(run_dir, tmp_path):
    broken = tmp_path / 'run'
    shutil.copytree(run_dir, broken)
    data = (broken / 'best.safetensors').read_bytes()
    (broken / 'best.safetensors').write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r'best\.safetensors'):
        load_model(broken)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_model(tmp_path / 'none.safetensors', model='resnet10t')
    pickle = tmp_path / 'w.pth'
    pickle.write_bytes(b'\x80\x04not read')
    with pytest.raises(ValueError, match='no pickles'):
        load_model(pickle, model='resnet10t')
    with pytest.raises(ValueError, match='does not fit resnet18'):
        load_model(run_dir / 'best.safetensors', model='resnet18', num_classes=3)
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet10q'.*closest"):
        load_model(None, model='resnet10q')


def test_the_trainer_initial_checkpoint_reads_through_the_loader(run_dir, monkeypatch):
    import timm_adl.hub.loader as loader
    from timm_adl.train.distributed import DistInfo
    from timm_adl.train.engine import build_model

    calls = []
    real = loader.read_checkpoint
    monkeypatch.setattr(loader, 'read_checkpoint', lambda *a, **k: calls.append(a) or real(*a, **k))
    cfg = load_config(_recipe(initial_checkpoint=str(run_dir / 'best.safetensors'), adl=None))
    model, fresh = build_model(cfg, 3, DistInfo())
    assert calls == [(str(run_dir / 'best.safetensors'),)] and fresh == set()
    expected = load_file(str(run_dir / 'best.safetensors'))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_json_of_sources_is_plain(run_dir):
    loaded = load_model(run_dir)
    json.dumps({'sources': loaded.sources, 'files': loaded.files})  # reports can record them as they are
