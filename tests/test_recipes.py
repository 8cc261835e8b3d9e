"""The sixteen CUB/ImageNet recipes: they load, build their model, and run one step on fake data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fakes import make_fake_wsol_metadata
from safetensors.torch import load_file

import timm_adl
from timm_adl import ADL
from timm_adl.train import config_to_dict, engine, load_config, run_training
from timm_adl.train.engine import build_model
from timm_adl.train.optim import head_param_names

RECIPES = Path(__file__).resolve().parent.parent / 'recipes'
ARCHS = ('vgg16_gap', 'resnet50_se', 'mobilenetv1', 'inception_v3')
PAPER_RECIPES = [f'{d}/{a}_{m}.yaml' for d in ('cub', 'imagenet') for a in ARCHS for m in ('cam', 'adl')]
# The paper's gamma per backbone (§4): 80 % VGG-GAP and InceptionV3, 90 % ResNet, 95 % MobileNetV1.
PAPER_GAMMA = {'vgg16_gap': 0.8, 'resnet50_se': 0.9, 'mobilenetv1': 0.95, 'inception_v3': 0.8}


def test_all_sixteen_recipes_exist():
    found = sorted(
        str(p.relative_to(RECIPES))
        for d in ('cub', 'imagenet')
        for p in (RECIPES / d).glob('*.yaml')
        if not p.stem.endswith('_has')  # the HaS-32 baselines: tests/test_recipes_has.py
    )
    assert found == sorted(PAPER_RECIPES)


@pytest.mark.parametrize('dataset', ['cub', 'imagenet'])
@pytest.mark.parametrize('arch', ARCHS)
def test_cam_and_adl_recipes_differ_only_by_adl(dataset, arch):
    cam = load_config(RECIPES / dataset / f'{arch}_cam.yaml')
    adl = load_config(RECIPES / dataset / f'{arch}_adl.yaml')
    assert cam.adl is None and adl.adl is not None
    assert timm_adl.BASELINES[adl.model] == cam.model  # the ADL model is the baseline's twin
    assert adl.adl.gamma == PAPER_GAMMA[arch] and adl.adl.drop_rate == 0.75
    a, c = config_to_dict(adl), config_to_dict(cam)
    for key in ('model', 'adl', 'output_dir'):
        a.pop(key), c.pop(key)
    assert a == c  # same budget and optimiser: a fair comparison
    assert cam.data.val_split != 'test' and cam.pretrained
    assert cam.num_classes == (200 if dataset == 'cub' else 1000)


@pytest.fixture(scope='module')
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('recipes-data')
    make_fake_wsol_metadata(root, n_classes=2, per_class=1)  # 2 images per split: one step at batch 2
    return root


@pytest.mark.slow
@pytest.mark.parametrize('recipe', PAPER_RECIPES)
def test_recipe_builds_and_runs_one_step(recipe, fake_root, tmp_path, monkeypatch):
    """Each recipe builds its model (ADL settings, head group) and takes one step + one validation at 64 px."""
    torch.set_num_threads(1)
    built = {}

    def spy(cfg, num_classes, info):  # the trainer's own build, observed
        model, new_params = build_model(cfg, num_classes, info)
        built.update(model=model, classifier=model.get_classifier().weight.detach().clone(), new=new_params)
        return model, new_params

    monkeypatch.setattr(engine, 'build_model', spy)
    out = tmp_path / 'run'
    cfg = load_config(
        RECIPES / recipe,
        [
            'pretrained=false',
            f'data.root={fake_root}',
            f'data.metadata_root={fake_root / "metadata"}',
            'img_size=64',
            'batch_size=2',
            'epochs=1',
            'num_workers=0',
            f'output_dir={out}',
        ],
    )
    result = run_training(cfg, progress=False)

    model, arch = built['model'], recipe.split('/')[1].rsplit('_', 1)[0]
    assert model.num_classes == cfg.num_classes and not built['new']
    adls = [m for m in model.modules() if isinstance(m, ADL)]
    if recipe.endswith('_adl.yaml'):
        assert len(adls) == 3 and all(m.gamma == PAPER_GAMMA[arch] and m.drop_rate == 0.75 for m in adls)
    else:
        assert not adls
    head = head_param_names(model, cfg.optim.head or ())
    classifier = model.pretrained_cfg['classifier'] + '.weight'
    assert classifier in head and 0 < len(head) < len(list(model.parameters()))

    assert result['steps'] == 1
    assert set(result['final']) >= {'top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2'}
    weights = load_file(result['checkpoints']['last'])
    assert not torch.equal(weights[classifier], built['classifier'])  # the step trained the classifier
