"""``timm-adl demo``: a tiny end-to-end run writes the public outputs with exactly the public keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import has_swatch
from PIL import Image

from timm_adl.cli import main
from timm_adl.commands.demo import RESULT_KEYS, format_table, recipe_dir
from timm_adl.train import load_config
from timm_adl.viz import GT_COLOR, PRED_COLOR

PUBLIC_KEYS = {
    'seed',
    'method',
    'top1_clas',
    'gt_known_loc',
    'top1_loc',
    'max_box_acc',
    'max_box_acc_v2',
    'train_seconds',
}


def test_result_keys_are_the_public_interface():
    assert set(RESULT_KEYS) == PUBLIC_KEYS


def test_recipes_are_an_equal_budget_pair():
    cam = load_config(recipe_dir() / 'cam.yaml')
    adl = load_config(recipe_dir() / 'adl.yaml')
    assert cam.adl is None and adl.adl is not None and adl.adl.after
    # everything but the ADL layers is the same: same model, data, schedule, epochs, batch
    for key in ('model', 'model_kwargs', 'img_size', 'epochs', 'batch_size', 'optim', 'sched', 'aug', 'data'):
        assert getattr(cam, key) == getattr(adl, key), key
    assert cam.data.val_split != 'test'


def test_format_table_reports_mean_sd_and_difference():
    rows = [
        {
            'seed': s,
            'method': m,
            'top1_clas': 90.0 + s,
            'gt_known_loc': 10.0,
            'top1_loc': 9.0,
            'max_box_acc': base + 2 * s,
            'max_box_acc_v2': 20.0,
            'train_seconds': 1.0,
        }
        for s in (0, 1)
        for m, base in (('cam', 20.0), ('adl', 30.0))
    ]
    text = format_table(rows)
    assert '20.0 ±  1.0' not in text  # sd of (20, 22) is 1.41
    assert ' 21.0 ±  1.4' in text and ' 31.0 ±  1.4' in text
    assert '+10.0 ±  0.0' in text  # ADL - CAM MaxBoxAcc, per seed


@pytest.mark.slow
def test_tiny_demo_writes_results_and_figure(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['demo', '--tiny', '--seeds', '0', '--out', str(out)]) == 0
    rows = json.loads((out / 'results.json').read_text())
    assert [(r['seed'], r['method']) for r in rows] == [(0, 'cam'), (0, 'adl')]
    for row in rows:
        assert set(row) == PUBLIC_KEYS
        for key in ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2'):
            assert 0.0 <= row[key] <= 100.0
        assert row['train_seconds'] > 0
    png = (out / 'compare.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    with Image.open(out / 'compare.png') as im:
        picture = np.asarray(im.convert('RGB'))
    tile, n_rows = 288, 8  # the 96 px images drawn 3x; image, then heatmap and boxes per model
    assert picture.shape[1] == 5 * tile + 4 * 4 and picture.shape[0] > n_rows * tile
    top = int(np.argmax((picture[:, 0] != 255).any(-1)))  # first image row, under the column titles
    legend = picture[top + n_rows * tile + (n_rows - 1) * 4 :]  # below: red = ground truth, green = estimate
    assert has_swatch(legend, GT_COLOR) and has_swatch(legend, PRED_COLOR)
    diag = json.loads((out / 'diagnostics.json').read_text())
    assert {d['method'] for d in diag} == {'cam', 'adl'} and 'top1_drop_always' in diag[1]
    printed = capsys.readouterr().out
    assert 'MaxBoxAcc' in printed and 'ADL-CAM' in printed
    # a second run reuses the data and the finished training runs instead of starting over
    assert main(['demo', '--tiny', '--seeds', '0', '--out', str(out)]) == 0
    assert json.loads((out / 'results.json').read_text())[0]['train_seconds'] == rows[0]['train_seconds']


def test_repeated_seeds_are_a_clear_error(tmp_path, capsys):
    assert main(['demo', '--seeds', '0', '0', '--out', str(tmp_path)]) == 2
    assert 'repeats' in capsys.readouterr().err


def test_foreign_data_dir_is_a_clear_error(tmp_path, capsys):
    foreign = tmp_path / 'photos'
    foreign.mkdir()
    (foreign / 'keep.jpg').write_bytes(b'not ours')
    assert main(['demo', '--tiny', '--data-dir', str(foreign), '--out', str(tmp_path / 'out')]) == 2
    assert 'not a synthetic WSOL set' in capsys.readouterr().err
    assert (foreign / 'keep.jpg').read_bytes() == b'not ours'
