"""The whole path on modern backbones: `timm-adl train` (the synthetic recipes, model overridden) on
ConvNeXt with and without ADL and on a small ViT, then `timm-adl eval` and `timm-adl cam` on the result.

Tiny on purpose: 4 images per class and split, 64 px (ConvNeXt: a 2x2 last map) and 32 px (ViT: a 2x2 patch
grid), one epoch; what is checked is that every stage runs and writes what it should, not the numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from fakes import make_fake_wsol_metadata, write_image

from timm_adl.cli import main

RECIPES = Path(__file__).resolve().parents[1] / 'recipes' / 'synthetic'
VIT_KWARGS = ('img_size=32', 'depth=2')

CASES = {
    'convnext_cam': ('cam.yaml', 'convnext_atto', 64, (), ()),
    'convnext_adl': ('adl.yaml', 'convnext_atto', 64, (), ('adl.after=[stages.3]',)),
    'vit_cam': ('cam.yaml', 'vit_tiny_patch16_224', 32, VIT_KWARGS, ()),
}


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=4)
    return root


def _run(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.slow
@pytest.mark.parametrize('case', list(CASES))
def test_train_eval_cam_end_to_end(case, data_root, tmp_path, capsys):
    torch.set_num_threads(1)
    recipe, model, size, kwargs, extra = CASES[case]
    out = tmp_path / 'run'
    model_kwargs = '{' + ', '.join(kv.replace('=', ': ') for kv in kwargs) + '}'
    _run(
        [
            'train',
            RECIPES / recipe,
            f'model={model}',
            f'model_kwargs={model_kwargs}',
            f'data.root={data_root}',
            f'data.metadata_root={data_root / "metadata"}',
            f'img_size={size}',
            'epochs=1',
            'eval_every=1',
            'batch_size=4',
            f'output_dir={out}',
            *extra,
            '--no-progress',
        ],
        capsys,
    )
    assert (out / 'best.safetensors').is_file()
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['best_epoch'] == 1
    assert 0.0 <= summary['best']['max_box_acc'] <= 100.0
    config = (out / 'config.yaml').read_text()
    assert f'model: {model}' in config and ('stages.3' in config) == (case == 'convnext_adl')

    model_args = ['--model', model, '--checkpoint', out / 'best.safetensors']
    if kwargs:
        model_args += ['--model-kwargs', *kwargs]
    methods = ('cam', 'gradcam') if _eval_has_cam_method(capsys) else ('cam',)
    for method in methods:
        js = tmp_path / f'eval_{method}.json'
        argv = ['eval', *model_args, '--data-dir', data_root, '--dataset', 'wsol-metadata']
        argv += ['--metadata-dir', data_root / 'metadata', '--split', 'test', '--json', js]
        if method != 'cam':
            argv += ['--cam-method', method]
        _run(argv, capsys)
        assert 'max_box_acc' in js.read_text()

    photo = tmp_path / 'photo.jpg'
    write_image(photo, (50, 40), seed=1)
    for method in ('cam', 'gradcam'):
        png = tmp_path / f'{method}.png'
        text = _run(['cam', *model_args, '--image', photo, '--out', png, '--cam-method', method], capsys)
        assert f'map: {method}' in text and png.read_bytes()[:4] == b'\x89PNG'
        assert re.search(r'box (\d+) (\d+) (\d+) (\d+)', text)


def _eval_has_cam_method(capsys) -> bool:
    """`timm-adl eval --cam-method` arrives with the evaluation-loop work; until then eval runs 'cam' only."""
    with pytest.raises(SystemExit):
        main(['eval', '--help'])
    return '--cam-method' in capsys.readouterr().out
