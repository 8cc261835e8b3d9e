"""``timm-adl reproduce`` (one paper row end to end on a fake CUB tree) and the published figures it cites."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from fakes import make_fake_cub

from timm_adl.cli import main as cli_main
from timm_adl.published import PUBLISHED_RESULTS, published_results
from timm_adl.reproduce import BACKBONES, DATASETS, ReproduceConfig, ReproduceError, run_reproduction
from timm_adl.train.recipes import list_recipes

# A tiny timm model, 64 px, one epoch: every step of the command in seconds. The published figures still
# come from --backbone resnet50_se.
TINY = (
    'model=resnet10t',
    'model_kwargs={channels: [8, 16, 32, 64], stem_width: 8}',
    'pretrained=false',
    'img_size=64',
    'epochs=1',
    'batch_size=4',
    'num_workers=0',
    'amp=none',
    'channels_last=false',
    'optim.head=null',
)
TINY_ADL = ('adl.after=[layer3]',)  # resnet10t has no ADL layers of its own


@pytest.fixture(scope='module')
def cub_dir(tmp_path_factory) -> Path:
    """A fake CUB-200-2011 tree prepared as `timm-adl data cub DIR` leaves it (val carved from train)."""
    from timm_adl.data.prepare_cub import prepare_cub

    root = tmp_path_factory.mktemp('cub')
    make_fake_cub(root, n_classes=2, per_class=6)
    prepare_cub(root, md5=None, val_per_class=1, progress=False)  # the tree is there: nothing downloaded
    return root


def _argv(cub_dir: Path, out: Path, *extra: str) -> list[str]:
    argv = ['reproduce', '--dataset', 'cub', '--backbone', 'resnet50_se', '--data-dir', str(cub_dir)]
    argv += ['--out', str(out), '--device', 'cpu', '--no-progress', '--set', *TINY, '--set-adl', *TINY_ADL]
    return argv + list(extra)


@pytest.mark.slow
def test_reproduce_end_to_end_and_resume(cub_dir, tmp_path, capsys, monkeypatch):
    out, hub = tmp_path / 'out', tmp_path / 'hub'
    assert cli_main(_argv(cub_dir, out, '--push', 'acme', '--dry-run', str(hub))) == 0
    printed = capsys.readouterr().out
    assert '| ADL paper Table 3 (ResNet50-SE) | ADL |' in printed

    record = json.loads((out / 'comparison.json').read_text())
    assert record['dataset_name'] == 'CUB-200-2011' and record['backbone'] == 'resnet50_se'
    arms = {a['method']: a for a in record['arms']}
    assert set(arms) == {'cam', 'adl'}
    for arm in arms.values():
        assert arm['num_test_images'] == 6 and arm['num_val_images'] == 2 and arm['val_split'] == 'val'
        for value in (arm['top1_clas'], arm['top1_loc'], arm['oracle']['max_box_acc_v2']):
            assert 0.0 <= value <= 100.0
        assert arm['calibrated'] is not None and 0.0 <= arm['calibrated']['threshold'] < 1.0
        # the val-picked threshold cannot beat the test split's own best (the oracle)
        assert arm['calibrated']['max_box_acc_v2'] <= arm['oracle']['max_box_acc_v2'] + 1e-9
    assert arms['adl']['recipe'] == 'cub/resnet50_se_adl' and arms['cam']['model'] == 'resnet10t'
    published = {(p['table'], p['method'], p['metric']): p['value'] for p in record['published']}
    assert published[('ADL paper Table 3', 'adl', 'top1_loc')] == 62.29
    assert published[('wsolevaluation', 'cam', 'max_box_acc_v2')] == 63.0

    text = (out / 'comparison.md').read_text()
    assert '| timm-adl, this run (`resnet10t`) | CAM |' in text and 'plain ResNet50' in text
    assert (out / 'figure3.png').read_bytes()[:4] == b'\x89PNG'

    folders = sorted(p.name for p in hub.iterdir())
    assert folders == ['resnet10t-adl.cub', 'resnet10t-cam.cub']
    for name in folders:
        card = (hub / name / 'README.md').read_text()
        assert '**Training data:** CUB-200-2011' in card and 'Flickr' in card
        assert '## Results on CUB-200-2011, test split' in card
        assert '![CAM heatmaps](heatmaps.png)' in card
        assert (hub / name / 'heatmaps.png').is_file()
    adl_recipe = yaml.safe_load((hub / 'resnet10t-adl.cub' / 'recipe.yaml').read_text())
    assert adl_recipe['adl']['after'] == ['layer3']

    # The folder holds a reproduction: a second run needs --resume, and then reuses both finished arms.
    assert cli_main(_argv(cub_dir, out)) == 2
    assert '--resume' in capsys.readouterr().err
    again_config = ReproduceConfig(
        'cub',
        'resnet50_se',
        str(cub_dir),
        str(out),
        TINY,
        (),
        TINY_ADL,
        resume=True,
        device='cpu',
        progress=False,
    )
    again = run_reproduction(again_config)
    assert again.reused == ('cam', 'adl')
    assert [a.to_dict() for a in again.arms] == record['arms']
    # An arm stopped after its training but before its results were recorded: the trainer's own resume
    # finds the run complete, and the same weights give the same results.
    (out / 'arms' / 'adl.json').unlink()
    again = run_reproduction(again_config)
    assert again.reused == ('cam',)
    assert again.arm('adl').to_dict() == arms['adl']

    # --push without --dry-run: each arm's folder goes up in one commit (the Hub API is faked here)
    uploads = []

    class Commit:
        commit_url = 'https://hf.co/fake/commit/0'

    class Repo(str):
        repo_id = property(lambda self: str(self))

    monkeypatch.setattr(huggingface_hub.HfApi, 'create_repo', lambda self, repo_id, **kw: Repo(repo_id))
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        'upload_folder',
        lambda self, **kw: uploads.append((kw['repo_id'], sorted(os.listdir(kw['folder_path'])))) or Commit(),
    )
    pushed = run_reproduction(dataclasses.replace(again_config, push_org='acme'))
    assert pushed.pushed == (Commit.commit_url,) * 2
    assert [u[0] for u in uploads] == ['acme/resnet10t-cam.cub', 'acme/resnet10t-adl.cub']
    assert all('heatmaps.png' in files and 'README.md' in files for _, files in uploads)
    # ... and a resumed reproduction must be the same one
    with pytest.raises(ReproduceError, match='overrides'):
        run_reproduction(ReproduceConfig('cub', 'resnet50_se', str(cub_dir), str(out), (), resume=True))


def test_reproduce_bad_input(cub_dir, tmp_path, capsys):
    base = ['reproduce', '--dataset', 'cub', '--out', str(tmp_path / 'o')]
    assert cli_main([*base, '--backbone', 'resnet50']) == 2
    assert "'resnet50'" in capsys.readouterr().err  # names the bad value and the closest valid ones
    assert cli_main([*base, '--backbone', 'resnet50_se', '--data-dir', str(tmp_path)]) == 2
    assert 'timm-adl data cub' in capsys.readouterr().err
    argv = [*base, '--backbone', 'resnet50_se', '--data-dir', str(cub_dir), '--set', 'output_dir=x']
    assert cli_main(argv) == 2
    assert '--out' in capsys.readouterr().err
    argv = [*base, '--backbone', 'resnet50_se', '--data-dir', str(cub_dir), '--set', 'epochz=1']
    assert cli_main(argv) == 2
    assert 'epochs' in capsys.readouterr().err
    assert cli_main([*base, '--backbone', 'resnet50_se', '--dry-run', str(tmp_path / 'h')]) == 2
    assert '--push' in capsys.readouterr().err
    argv = [*base, '--backbone', 'resnet50_se', '--data-dir', str(cub_dir), '--push', 'bad org!']
    assert cli_main(argv) == 2
    assert "'bad org!/resnet50_se.cub' is not a valid Hub repo id" in capsys.readouterr().err
    taken = tmp_path / 'h' / 'resnet50_se_adl.cub'
    taken.mkdir(parents=True)
    (taken / 'README.md').write_text('someone else')
    argv = [*base, '--backbone', 'resnet50_se', '--data-dir', str(cub_dir), '--push', 'acme', '--dry-run']
    assert cli_main([*argv, str(tmp_path / 'h')]) == 2
    assert 'resnet50_se_adl.cub exists and is not empty' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()  # nothing written for a refused run


def test_published_results_cover_every_recipe_row():
    rows = {tuple(r.name.split('/')) for r in list_recipes() if not r.name.startswith('synthetic/')}
    backbones = {(d, name.rsplit('_', 1)[0]) for d, name in rows}
    assert backbones == {(d, b) for d in DATASETS for b in BACKBONES}
    for dataset, backbone in backbones:
        found = published_results(dataset, backbone)
        paper = {r.method for r in found if r.table == 'ADL paper Table 3' and r.metric == 'top1_loc'}
        assert paper == {'cam', 'adl'}
        wsoleval = [r for r in found if r.table == 'wsolevaluation']
        assert len(wsoleval) == (0 if backbone == 'mobilenetv1' else 2)
        assert all(r.source and 0 < r.value < 100 for r in found)
    plain = [r for r in PUBLISHED_RESULTS if r.table == 'wsolevaluation' and r.backbone == 'resnet50_se']
    assert plain and all(r.source_backbone == 'ResNet50' and 'SE' in r.note for r in plain)


def test_comparison_without_val_split_or_wsolevaluation_row():
    from timm_adl.reproduce import ArmResult, BoxScores, format_comparison

    arm = ArmResult(
        'adl',
        'imagenet/mobilenetv1_adl',
        'mobilenetv1_adl',
        'r',
        'w.safetensors',
        'cam',
        0.2,
        70.0,
        60.0,
        45.0,
        BoxScores(61.0, 59.5, 0.3),
        None,
        None,
        100,
        None,
        1.0,
    )
    text = format_comparison(
        'ImageNet-1k', 'mobilenetv1', [arm], published_results('imagenet', 'mobilenetv1')
    )
    assert (
        '| timm-adl, this run (`mobilenetv1_adl`) | ADL | 70.00 | 60.00 | 45.00 | – | – | 61.00 | 59.50 |'
        in text
    )
    assert '| ADL paper Table 3 (MobileNetV1) | ADL | – | – | 43.01 |' in text
    assert 'not available (no validation split)' in text and 'wsolevaluation has no mobilenetv1 row' in text
