"""The HaS-32 baseline recipes (Hide-and-Seek, Singh & Lee 2017; the ADL paper's Table 3): each is its CAM
recipe plus the Hide-and-Seek keys, and trains a step with the patches hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fakes import make_fake_wsol_metadata

from timm_adl.data.hide_and_seek import HideAndSeek
from timm_adl.train import config_to_dict, engine, load_config, run_training
from timm_adl.train.recipes import list_recipes

RECIPES = Path(__file__).resolve().parent.parent / 'recipes'
ARCHS = ('vgg16_gap', 'resnet50_se', 'mobilenetv1', 'inception_v3')
HAS_RECIPES = [f'cub/{a}_has' for a in ARCHS] + ['synthetic/has']


def test_has_recipes_are_listed_with_a_summary() -> None:
    listed = {r.name: r.summary for r in list_recipes()}
    for name in HAS_RECIPES:
        assert 'HaS-32' in listed[name], name


@pytest.mark.parametrize('name', HAS_RECIPES)
def test_has_recipe_is_its_cam_recipe_plus_hiding(name: str) -> None:
    has = load_config(RECIPES / f'{name}.yaml')
    cam = load_config(RECIPES / f'{name.removesuffix("has")}cam.yaml')
    assert has.aug.hide_patch == 32 and has.aug.hide_prob == 0.5 and cam.aug.hide_patch == 0
    assert has.adl is None and has.output_dir != cam.output_dir
    a, c = config_to_dict(has), config_to_dict(cam)
    for cfg in (a, c):
        cfg.pop('output_dir')
        cfg['aug'].pop('hide_patch'), cfg['aug'].pop('hide_prob')
    assert a == c  # same model, budget and optimiser as the CAM baseline


@pytest.fixture(scope='module')
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('has-data')
    make_fake_wsol_metadata(root, n_classes=2, per_class=1)
    return root


def _one_step(recipe: str, fake_root: Path, out: Path, monkeypatch, img_size: int) -> list:
    seen: list = []
    build = engine._train_transform

    def spy(cfg, mean, std):  # the trainer's own train transform, observed
        transform = build(cfg, mean, std)
        seen.extend(t for t in transform.transforms if isinstance(t, HideAndSeek))
        return transform

    monkeypatch.setattr(engine, '_train_transform', spy)
    cfg = load_config(
        RECIPES / recipe,
        [
            'pretrained=false',
            f'data.root={fake_root}',
            f'data.metadata_root={fake_root / "metadata"}',
            'data.val_split=null',
            f'img_size={img_size}',
            'batch_size=2',
            'epochs=1',
            'num_workers=0',
            f'output_dir={out}',
        ],
    )
    assert run_training(cfg, progress=False)['steps'] == 1
    return seen


def test_synthetic_has_recipe_runs_one_step_hiding_scaled_patches(fake_root, tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    seen = _one_step('synthetic/has.yaml', fake_root, tmp_path / 'run', monkeypatch, img_size=96)
    assert [(t.patch_size, t.hide_prob, t.fill) for t in seen] == [(14, 0.5, 0.0)]  # round(32 * 96 / 224)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
def test_cub_has_recipe_runs_one_step(arch: str, fake_root, tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    seen = _one_step(f'cub/{arch}_has.yaml', fake_root, tmp_path / 'run', monkeypatch, img_size=64)
    assert [(t.patch_size, t.hide_prob) for t in seen] == [(9, 0.5)]  # round(32 * 64 / 224)
