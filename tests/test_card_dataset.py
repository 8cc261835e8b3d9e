"""The model card of a trained run names its real data set with its terms, and draws its own Figure 3.

Every CUB and ImageNet recipe reads the `wsol-metadata` loader format, so the data set must come from the
prepared data (``prepare.json`` of `timm-adl data`, ``synthetic.json``) or its folder names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
from fakes import make_fake_wsol_metadata
from safetensors.torch import save_file

from timm_adl.cli import main as cli_main
from timm_adl.hub.datasets import infer_dataset
from timm_adl.train import load_config, save_config

TINY = dict(model='resnet10t', model_kwargs=dict(channels=[8, 16, 32, 64], stem_width=8))


def _run_dir(tmp_path: Path, data: dict, name: str = 'run') -> Path:
    """A finished training run of a tiny model on ``data`` (config.yaml, best.safetensors, summary.json)."""
    run = tmp_path / name
    run.mkdir()
    cfg = load_config({**TINY, 'num_classes': 2, 'img_size': 32, 'data': data, 'output_dir': str(run)})
    save_config(cfg, run / 'config.yaml')
    model = timm.create_model('resnet10t', num_classes=2, **TINY['model_kwargs'])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, run / 'best.safetensors')
    (run / 'summary.json').write_text(json.dumps({'best': {'top1_clas': 50.0, 'max_box_acc': 40.0}}))
    return run


def _card(run: Path, out: Path, *extra: str) -> str:
    assert cli_main(['push', str(run), '--repo-id', 'acme/m', '--dry-run', str(out), *extra]) == 0
    return (out / 'README.md').read_text()


def _prepared(tmp_path: Path, folder: str, info: dict | None) -> Path:
    meta = tmp_path / folder / 'metadata'
    meta.mkdir(parents=True)
    if info is not None:
        (meta / 'prepare.json').write_text(json.dumps(info))
    return meta


def test_card_names_the_prepared_data_set_and_its_terms(tmp_path, capsys):
    meta = _prepared(tmp_path, 'CUB_200_2011', {'dataset': 'CUB-200-2011', 'seed': 0})
    data = {'name': 'wsol-metadata', 'root': str(meta.parent / 'images'), 'metadata_root': str(meta)}
    text = _card(_run_dir(tmp_path, data), tmp_path / 'card')
    assert '**Training data:** CUB-200-2011' in text
    assert 'trained on CUB-200-2011, whose own terms of use also apply: Caltech-UCSD Birds' in text
    assert 'metadata, whose' not in text and '**Training data:** metadata' not in text
    # no data to draw from here: the card says nothing of a picture, and the command says why
    assert 'heatmaps' not in text and 'no CAM picture' in capsys.readouterr().out


@pytest.mark.parametrize(
    ('folder', 'info', 'expected', 'terms'),
    [
        ('ILSVRC', None, 'ImageNet-1k', 'non-commercial research'),  # `timm-adl data imagenet` layout
        ('OpenImages', None, 'OpenImages30k', 'CC BY 4.0'),  # `timm-adl data openimages`: no prepare.json
        ('elsewhere', {'dataset': 'ImageNet-1k'}, 'ImageNet-1k', 'non-commercial research'),
    ],
)
def test_infer_dataset_from_prepared_folders(tmp_path, folder, info, expected, terms):
    meta = _prepared(tmp_path, folder, info)
    found = infer_dataset({'name': 'wsol-metadata', 'root': str(meta.parent), 'metadata_root': str(meta)})
    assert found is not None and found.name == expected and terms in found.terms


def test_infer_dataset_recipe_defaults_and_unknown():
    assert infer_dataset({'name': 'wsol-metadata', 'metadata_root': 'metadata/CUB'}).name == 'CUB-200-2011'
    assert infer_dataset({'name': 'wsol-metadata', 'metadata_root': 'metadata/ILSVRC'}).name == 'ImageNet-1k'
    assert infer_dataset({'name': 'cub', 'root': '/data/birds'}).name == 'CUB-200-2011'
    assert infer_dataset({'name': 'wsol-metadata', 'root': '/x/y', 'metadata_root': '/x/y/metadata'}) is None


def test_card_of_a_synthetic_run_names_the_seed_and_draws_its_figure(tmp_path):
    root = tmp_path / 'synth'
    make_fake_wsol_metadata(root, n_classes=2, per_class=3)
    (root / 'synthetic.json').write_text(json.dumps({'generator_version': 1, 'seed': 3, 'config': {}}))
    data = {'name': 'wsol-metadata', 'root': str(root), 'metadata_root': str(root / 'metadata')}
    out = tmp_path / 'card'
    text = _card(_run_dir(tmp_path, data), out)
    assert '**Training data:** timm-adl synthetic WSOL set (seed 3)' in text
    assert 'no third-party images' in text
    # no --heatmaps: the card drew Figure 3 from the split its metrics come from (the recipe's val)
    assert '## Results on timm-adl synthetic WSOL set (seed 3), val split' in text
    assert '![CAM heatmaps](heatmaps.png)' in text
    assert (out / 'heatmaps.png').read_bytes()[:4] == b'\x89PNG'
