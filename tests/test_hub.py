"""Hub I/O, offline: push --dry-run writes the folder, the folder placed in a local Hugging Face cache loads
back through ``timm.create_model('hf-hub:...')`` and ``timm_adl.load`` as the same model (weights, eval
outputs, ADL points and settings), bad files fail cleanly, unpublished paper checkpoints explain themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image
from safetensors.torch import load_file, save_file

import timm_adl
from timm_adl import hub
from timm_adl.cli import main as cli_main

torch.set_num_threads(min(2, torch.get_num_threads()))

METRICS = {
    'top1_clas': 71.234,
    'gt_known_loc': 66.5,
    'top1_loc': 51.875,
    'max_box_acc': 63.25,
    'max_box_acc_v2': 58.125,
    'best_threshold': 0.35,
    'curves': {'iou_30': [0.1, 0.2]},
}
PAPER_POINTS = {  # mobilenetv1_adl's default placement, with settings that differ from its defaults
    p: {'drop_rate': 0.6, 'gamma': 0.85, 'per_sample': False}
    for p in ('blocks.3.0', 'blocks.4.0', 'blocks.4.1')
}
INSERTED_POINTS = {
    'layer3.0': {'drop_rate': 0.6, 'gamma': 0.85, 'per_sample': False},
    'layer4': {'drop_rate': 0.75, 'gamma': 0.9, 'per_sample': True},
}


# ---------------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache in tmp. huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE into
    ``huggingface_hub.constants`` at import time, and reads those attributes at call time: patch both."""
    home = tmp_path / 'hf_home'
    cache = home / 'hub'
    cache.mkdir(parents=True)
    for key, value in {'HF_HOME': home, 'HF_HUB_CACHE': cache, 'HF_HUB_OFFLINE': '1'}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HOME', str(home))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    return cache


def place_in_cache(folder: Path, cache: Path, repo_id: str) -> str:
    """Lay ``folder`` out as huggingface_hub's cache does after a download: blobs named by their hash (sha256),
    ``snapshots/<commit>/<file>`` symlinks to them, ``refs/main`` holding the commit. Returns the commit."""
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    files = sorted(p for p in folder.iterdir() if p.is_file())
    commit = hashlib.sha1(b''.join(p.read_bytes() for p in files)).hexdigest()
    (repo / 'blobs').mkdir(parents=True, exist_ok=True)
    (repo / 'snapshots' / commit).mkdir(parents=True)
    (repo / 'refs').mkdir(exist_ok=True)
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, repo / 'blobs' / digest)
        os.symlink(f'../../blobs/{digest}', repo / 'snapshots' / commit / path.name)
    (repo / 'refs' / 'main').write_text(commit)
    return commit


def cached_blob(cache: Path, repo_id: str, filename: str) -> Path:
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    (snapshot,) = (repo / 'snapshots').iterdir()
    return (snapshot / filename).resolve()


def eval_outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert timm_adl.adl_points(a) == timm_adl.adl_points(b)
    assert torch.equal(eval_outputs(a), eval_outputs(b))


def write_png(path: Path) -> Path:
    Image.new('RGB', (8, 4), (200, 30, 30)).save(path)
    return path


@pytest.fixture(scope='module')
def paper_model():
    """A registered *_adl model with non-default ADL settings: drop_rate 0.6 must survive timm's export."""
    torch.manual_seed(0)
    return timm.create_model('mobilenetv1_adl', num_classes=4, adl_drop_rate=0.6, adl_gamma=0.85)


@pytest.fixture(scope='module')
def inserted_model():
    """Any timm model through timm_adl.insert: per-point settings, one of them per_sample."""
    torch.manual_seed(0)
    return timm_adl.insert(timm.create_model('resnet18', num_classes=3), after=INSERTED_POINTS)


@pytest.fixture(scope='module')
def saved(tmp_path_factory, paper_model, inserted_model):
    """Both models written once by save_pretrained (module scope: saving checks the model by rebuilding it)."""
    root = tmp_path_factory.mktemp('saved')
    png = write_png(root / 'grid.png')
    return {
        'paper': hub.save_pretrained(
            paper_model,
            root / 'paper',
            METRICS,
            {'model': 'mobilenetv1_adl', 'data': {'name': 'cub'}, 'img_size': 224},
            repo_id='acme/mobilenetv1_adl.cub',
            split='test',
            label_names=['a', 'b', 'c', 'd'],
            heatmaps=png,
        ),
        'inserted': hub.save_pretrained(
            inserted_model, root / 'inserted', label_names=['x', 'y', 'z'], repo_id='acme/r18-adl'
        ),
    }


# ---------------------------------------------------------------------------------------------------------
# the folder


def test_config_records_architecture_and_adl(saved):
    paper = json.loads((saved['paper'] / 'config.json').read_text())
    assert paper['architecture'] == 'mobilenetv1_adl'
    assert paper['num_classes'] == 4 and paper['label_names'] == ['a', 'b', 'c', 'd']
    # timm's own export drops every *_drop_rate arg: ours is written explicitly.
    args = paper['model_args']
    assert (args['adl_drop_rate'], args['adl_gamma'], args['adl_after']) == (0.6, 0.85, list(PAPER_POINTS))
    assert paper['timm_adl']['adl_points'] == PAPER_POINTS
    assert paper['pretrained_cfg']['hf_hub_filename'] == 'model.safetensors'
    assert paper['pretrained_cfg']['crop_mode'] == 'squash'

    inserted = json.loads((saved['inserted'] / 'config.json').read_text())
    assert inserted['architecture'] == 'adl_inserted'
    assert not inserted['architecture'].endswith('_adl') and 'adl_inserted' not in timm.list_models('*_adl')
    assert inserted['model_args']['base_architecture'] == 'resnet18'
    assert inserted['model_args']['adl_points'] == INSERTED_POINTS
    assert sorted(p.name for p in saved['inserted'].iterdir()) == [
        'README.md',
        'config.json',
        'model.safetensors',
    ]


def test_card_renders_metrics_picture_dataset_split_recipe(saved):
    folder = saved['paper']
    assert sorted(p.name for p in folder.iterdir()) == [
        'README.md',
        'config.json',
        'heatmaps.png',
        'metrics.json',
        'model.safetensors',
        'recipe.yaml',
    ]
    text = (folder / 'README.md').read_text()
    for label, value in [
        ('Top-1 Clas', '71.23'),
        ('GT-known Loc', '66.50'),
        ('Top-1 Loc', '51.88'),
        ('MaxBoxAcc', '63.25'),
        ('MaxBoxAccV2', '58.12'),
    ]:
        assert f'| {label} | {value} |' in text
    assert '## Results on CUB-200-2011, test split' in text
    assert '![CAM heatmaps](heatmaps.png)' in text
    assert '[`recipe.yaml`](recipe.yaml)' in text and 'timm-adl train recipe.yaml' in text
    assert 'Choe, Junsuk and Shim, Hyunjung' in text and 'Attention-Based Dropout Layer' in text
    assert "timm.create_model('hf-hub:acme/mobilenetv1_adl.cub', pretrained=True)" in text
    assert 'import timm_adl' in text and 'Unknown model' in text
    assert '`blocks.4.1` | 0.6 | 0.85 | False' in text

    card = ModelCard.load(folder / 'README.md')
    assert card.data.library_name == 'timm' and card.data.pipeline_tag == 'image-classification'
    assert {'wsol', 'adl', 'timm'} <= set(card.data.tags)
    assert card.data.license == 'apache-2.0'
    results = {r.metric_name: r for r in card.data.eval_results}
    assert set(results) == {'Top-1 Clas', 'GT-known Loc', 'Top-1 Loc', 'MaxBoxAcc', 'MaxBoxAccV2'}
    assert results['Top-1 Loc'].metric_value == pytest.approx(51.875)
    assert {(r.dataset_name, r.dataset_split) for r in results.values()} == {('CUB-200-2011', 'test')}
    assert (folder / 'heatmaps.png').read_bytes()[:4] == b'\x89PNG'
    assert yaml.safe_load((folder / 'recipe.yaml').read_text())['model'] == 'mobilenetv1_adl'
    metrics = json.loads((folder / 'metrics.json').read_text())
    assert (
        metrics['dataset'] == 'CUB-200-2011' and metrics['split'] == 'test' and metrics['top1_loc'] == 51.875
    )
    assert 'curves' not in metrics


# ---------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize('which', ['paper', 'inserted'])
def test_roundtrip_through_offline_hub_cache(which, saved, hf_cache, paper_model, inserted_model):
    original = {'paper': paper_model, 'inserted': inserted_model}[which]
    repo = f'acme/{which}'
    commit = place_in_cache(saved[which], hf_cache, repo)

    model = timm.create_model(f'hf-hub:{repo}', pretrained=True)
    assert model.pretrained_cfg['hf_hub_id'] == repo
    assert_same_model(original, model)
    points = timm_adl.adl_points(model)
    assert points == (PAPER_POINTS if which == 'paper' else INSERTED_POINTS)  # drop_rate 0.6 came back

    loaded, labels = timm_adl.load(repo, revision=commit)
    assert labels == (['a', 'b', 'c', 'd'] if which == 'paper' else ['x', 'y', 'z'])
    assert not loaded.training
    assert_same_model(original, loaded)


def test_load_pins_revision_and_reports_missing_ones(saved, hf_cache):
    commit = place_in_cache(saved['inserted'], hf_cache, 'acme/r18')
    assert timm_adl.load(f'hf-hub:acme/r18@{commit}').label_names == ['x', 'y', 'z']
    with pytest.raises(FileNotFoundError, match='acme/r18'):
        timm_adl.load('acme/r18', revision='v9')
    with pytest.raises(FileNotFoundError, match='acme/nothing-here'):
        timm_adl.load('acme/nothing-here')


def test_load_local_folder(saved, inserted_model):
    model, labels = timm_adl.load(saved['inserted'])
    assert labels == ['x', 'y', 'z']
    assert_same_model(inserted_model, model)


def test_resave_of_loaded_model_is_identical(saved, tmp_path):
    model, _ = timm_adl.load(saved['paper'])
    again = hub.save_pretrained(model, tmp_path / 'again')
    first = json.loads((saved['paper'] / 'config.json').read_text())
    second = json.loads((again / 'config.json').read_text())
    assert (second['architecture'], second['model_args']) == (first['architecture'], first['model_args'])
    a, b = load_file(saved['paper'] / 'model.safetensors'), load_file(again / 'model.safetensors')
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_insert_on_a_paper_model_uses_its_baseline(tmp_path):
    model = timm_adl.insert(
        timm.create_model('mobilenetv1_adl', num_classes=2), after={'blocks.2.0': {'gamma': 0.7}}
    )
    spec = hub.describe_model(model)
    # The paper entrypoint takes per-point settings (adl_after as a dict), so its own name is kept.
    assert spec.architecture == 'mobilenetv1_adl' and spec.base_architecture == 'mobilenetv1_wsol'
    assert spec.model_args['adl_after']['blocks.2.0'] == {
        'drop_rate': 0.75,
        'gamma': 0.7,
        'per_sample': False,
    }
    rebuilt = timm.create_model(spec.architecture, **spec.model_args)
    assert timm_adl.adl_points(rebuilt) == timm_adl.adl_points(model) and len(timm_adl.adl_points(model)) == 4


# ---------------------------------------------------------------------------------------------------------
# bad files, missing files, missing import


def test_truncated_weights_fail_cleanly(saved, hf_cache):
    place_in_cache(saved['inserted'], hf_cache, 'acme/r18')
    blob = cached_blob(hf_cache, 'acme/r18', 'model.safetensors')
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    with pytest.raises(hub.CorruptCheckpointError, match='corrupted or truncated'):
        timm_adl.load('acme/r18')
    with pytest.raises(hub.CorruptCheckpointError, match='acme/r18'):
        timm.create_model('hf-hub:acme/r18', pretrained=True)
    blob.write_bytes(b'not a safetensors file')
    with pytest.raises(hub.CorruptCheckpointError):
        timm.create_model('hf-hub:acme/r18', pretrained=True)


def test_flipped_bytes_fail_hash_check(saved, hf_cache):
    place_in_cache(saved['paper'], hf_cache, 'acme/paper')
    blob = cached_blob(hf_cache, 'acme/paper', 'model.safetensors')
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor: safetensors alone cannot notice
    blob.write_bytes(bytes(data))
    with pytest.raises(hub.CorruptCheckpointError, match='does not match the hash'):
        timm_adl.load('acme/paper')


def test_verify_weights_small_git_blob(tmp_path):
    """A small file the Hub stores in git (not LFS) sits in the cache under its git object id."""
    save_file({'w': torch.arange(6.0)}, tmp_path / 'w.safetensors')
    data = (tmp_path / 'w.safetensors').read_bytes()
    oid = hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()
    (tmp_path / 'blobs').mkdir()
    (tmp_path / 'blobs' / oid).write_bytes(data)
    os.symlink(f'blobs/{oid}', tmp_path / 'model.safetensors')
    hub.verify_weights(tmp_path / 'model.safetensors')
    (tmp_path / 'blobs' / oid).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(hub.CorruptCheckpointError, match='hash'):
        hub.verify_weights(tmp_path / 'model.safetensors')


def test_pickle_weights_are_never_loaded(saved, hf_cache, tmp_path):
    folder = tmp_path / 'pickled'
    shutil.copytree(saved['inserted'], folder)
    state = load_file(folder / 'model.safetensors')
    (folder / 'model.safetensors').unlink()
    torch.save(state, folder / 'pytorch_model.bin')
    place_in_cache(folder, hf_cache, 'acme/pickled')
    with pytest.raises(FileNotFoundError, match='safetensors'):
        timm_adl.load('acme/pickled')
    with pytest.raises(LocalEntryNotFoundError):  # config.json asks timm for model.safetensors only
        timm.create_model('hf-hub:acme/pickled', pretrained=True)
    with pytest.raises(FileNotFoundError, match='safetensors'):
        timm_adl.load(folder)


def test_unknown_architecture_is_explained(saved, tmp_path):
    folder = tmp_path / 'future'
    shutil.copytree(saved['paper'], folder)
    config = json.loads((folder / 'config.json').read_text())
    config['architecture'] = 'mobilenetv1_adl_v2'
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match=r'Unknown model \(mobilenetv1_adl_v2\).*mobilenetv1_adl'):
        timm_adl.load(folder)


def test_without_import_timm_raises_unknown_model(saved, hf_cache):
    place_in_cache(saved['inserted'], hf_cache, 'acme/r18')
    code = textwrap.dedent(
        """
        import timm
        try:
            timm.create_model('hf-hub:acme/r18', pretrained=True)
        except RuntimeError as err:
            print(err)
        """
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert 'Unknown model (adl_inserted)' in out.stdout


# ---------------------------------------------------------------------------------------------------------
# unpublished paper checkpoints


def test_wsol_pretrained_cfgs():
    cfgs = hub.wsol_pretrained_cfgs(
        'resnet50_se_adl', {'classifier': 'fc', 'first_conv': 'conv1', 'url': 'x'}
    )
    assert sorted(cfgs) == ['resnet50_se_adl.cub', 'resnet50_se_adl.in1k']
    cub = cfgs['resnet50_se_adl.cub']
    # Not published: no weight source at all, so timm.list_pretrained() does not list it (issue #11).
    assert cub['num_classes'] == 200 and cub['classifier'] == 'fc'
    assert not {'url', 'hf_hub_id', 'hf_hub_filename', 'file'} & set(cub)
    assert cfgs['resnet50_se_adl.in1k']['num_classes'] == 1000
    assert len(hub.WSOL_CHECKPOINTS) == 16
    recipes = {c.recipe for c in hub.WSOL_CHECKPOINTS.values() if c.tag == 'cub'}
    assert 'recipes/cub/vgg16_gap_cam.yaml' in recipes and 'recipes/cub/inception_v3_adl.yaml' in recipes
    timm.models.generate_default_cfgs(cfgs)  # valid PretrainedCfg fields
    with pytest.raises(ValueError, match='resnet50_se_adl'):
        hub.wsol_pretrained_cfgs('resnet50_se_adll')


def test_every_wsol_checkpoint_has_its_recipe():
    root = Path(__file__).resolve().parents[1]
    for ckpt in hub.WSOL_CHECKPOINTS.values():
        recipe = yaml.safe_load((root / ckpt.recipe).read_text())
        assert (recipe['model'], recipe['num_classes']) == (ckpt.architecture, ckpt.num_classes), ckpt.recipe
        assert timm.is_model(ckpt.architecture)


def test_card_dataset_from_wsol_metadata_recipe(paper_model, tmp_path):
    recipe = {'model': 'mobilenetv1_adl', 'data': {'name': 'wsol-metadata', 'metadata_root': 'metadata/CUB/'}}
    folder = hub.save_pretrained(paper_model, tmp_path / 'm', {'top1_loc': 50.0}, recipe, split='test')
    assert '## Results on CUB-200-2011, test split' in (folder / 'README.md').read_text()


def test_explain_hub_errors_converts_only_wsol_checkpoints():
    @hub.explain_hub_errors
    def fake_entrypoint(pretrained=False, **kwargs):
        raise LocalEntryNotFoundError('offline')

    with pytest.raises(
        hub.CheckpointNotPublishedError, match=r'timm-adl train recipes/cub/resnet50_se_adl\.yaml'
    ):
        fake_entrypoint(pretrained=True, pretrained_cfg={'hf_hub_id': 'timm-adl/resnet50_se_adl.cub'})
    with pytest.raises(LocalEntryNotFoundError):  # someone else's repo: timm's error stays
        fake_entrypoint(pretrained=True, pretrained_cfg={'hf_hub_id': 'acme/other'})
    assert fake_entrypoint.__name__ == 'fake_entrypoint'


@pytest.mark.parametrize('name', ['resnet50_se_adl.cub', 'vgg16_gap.in1k'])
def test_unpublished_tag_explains_how_to_train(name, hf_cache):
    arch = name.split('.')[0]
    assert name in timm.list_models(f'{arch}.*', include_tags=True)  # registered tag ...
    assert name not in timm.list_pretrained(f'{arch}.*')  # ... whose weights cannot be downloaded (issue #11)
    ckpt = hub.WSOL_CHECKPOINTS[name]
    with pytest.raises(hub.CheckpointNotPublishedError) as info:
        timm.create_model(name, pretrained=True)
    message = str(info.value)
    assert 'not published yet' in message and f'timm-adl train {ckpt.recipe}' in message
    assert ckpt.repo_id in message
    with pytest.raises(hub.CheckpointNotPublishedError, match='not published yet'):
        timm_adl.load(ckpt.repo_id)


# ---------------------------------------------------------------------------------------------------------
# save / push behaviour


def test_save_is_atomic_and_refuses_to_clobber(paper_model, tmp_path):
    target = tmp_path / 'out'
    target.mkdir()
    (target / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='overwrite'):
        hub.save_pretrained(paper_model, target)
    assert [p.name for p in target.iterdir()] == ['keep.txt']
    with pytest.raises(ValueError, match='split'):
        hub.save_pretrained(paper_model, tmp_path / 'nosplit', METRICS, dataset='cub')
    with pytest.raises(ValueError, match='not a PNG'):
        hub.save_pretrained(paper_model, tmp_path / 'badpng', heatmaps=target / 'keep.txt')
    with pytest.raises(ValueError, match='label_names has 2 names'):
        hub.save_pretrained(paper_model, tmp_path / 'labels', label_names=['a', 'b'])
    with pytest.raises(ValueError, match=r'mobilenetv1_adl with 200 classes, got mobilenetv1_adl with 4'):
        hub.save_pretrained(paper_model, tmp_path / 'canon', repo_id='timm-adl/mobilenetv1_adl.cub')
    with pytest.raises(ValueError, match='no registered'):
        hub.save_pretrained(torch.nn.Conv2d(3, 3, 1), tmp_path / 'plain')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']  # no half-written or temp folders left
    hub.save_pretrained(paper_model, target, overwrite=True)
    assert (target / 'model.safetensors').is_file() and not (target / 'keep.txt').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_push_to_hub_uploads_one_commit(paper_model, monkeypatch):
    calls = []

    class Repo:
        repo_id = 'acme/m'

    class Commit:
        commit_url = 'https://hf-p-cfw.fyan.top/acme/m/commit/0'

    def create_repo(self, repo_id, **kw):
        calls.append(('create_repo', repo_id, kw))
        return Repo()

    def create_branch(self, repo_id, **kw):
        calls.append(('create_branch', repo_id, kw))

    def upload_folder(self, **kw):
        calls.append(('upload_folder', sorted(p.name for p in Path(kw['folder_path']).iterdir()), kw))
        return Commit()

    monkeypatch.setattr(huggingface_hub.HfApi, 'create_repo', create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, 'create_branch', create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, 'upload_folder', upload_folder)
    result = hub.push_to_hub(
        paper_model, 'acme/m', METRICS, dataset='cub', split='val', private=True, revision='v1'
    )
    assert result.commit_url.endswith('/commit/0')
    assert [c[0] for c in calls] == ['create_repo', 'create_branch', 'upload_folder']
    assert calls[0][2]['private'] is True and calls[1][2]['branch'] == 'v1'
    files, kw = calls[2][1], calls[2][2]
    assert files == ['README.md', 'config.json', 'metrics.json', 'model.safetensors']
    assert kw['repo_id'] == 'acme/m' and kw['revision'] == 'v1'
    calls.clear()
    with pytest.raises(ValueError, match='split'):  # a bad card fails before anything is sent
        hub.push_to_hub(paper_model, 'acme/m', METRICS, dataset='cub')
    assert calls == []


# ---------------------------------------------------------------------------------------------------------
# the command


@pytest.fixture
def run_dir(tmp_path, paper_model):
    """A training run as timm_adl.train leaves it: config.yaml, best.safetensors, summary.json."""
    from timm_adl.train import load_config, save_config

    run = tmp_path / 'run'
    run.mkdir()
    cfg = load_config(
        {
            'model': 'mobilenetv1_adl',
            'adl': {'drop_rate': 0.6, 'gamma': 0.85},
            'data': {'name': 'cub', 'val_split': 'val'},
            'output_dir': str(run),
        }
    )
    save_config(cfg, run / 'config.yaml')
    save_file({k: v.contiguous() for k, v in paper_model.state_dict().items()}, run / 'best.safetensors')
    (run / 'summary.json').write_text(json.dumps({'best': {'top1_clas': 70.0, 'max_box_acc': 61.5}}))
    return run


def test_push_dry_run_from_run_dir(run_dir, tmp_path, paper_model, hf_cache, capsys):
    metrics = tmp_path / 'results.json'
    metrics.write_text(json.dumps(METRICS))
    png = write_png(tmp_path / 'cams.png')
    out = tmp_path / 'card'
    argv = ['push', str(run_dir), '--repo-id', 'acme/mnv1.cub', '--dry-run', str(out)]
    assert cli_main([*argv, '--metrics', str(metrics), '--split', 'test', '--heatmaps', str(png)]) == 0
    assert 'nothing uploaded' in capsys.readouterr().out
    text = (out / 'README.md').read_text()
    assert '## Results on CUB-200-2011, test split' in text and '| Top-1 Loc | 51.88 |' in text
    assert '![CAM heatmaps](heatmaps.png)' in text
    recipe = yaml.safe_load((out / 'recipe.yaml').read_text())
    assert recipe['model'] == 'mobilenetv1_adl' and recipe['adl']['drop_rate'] == 0.6
    # ADL settings the recipe set on the model's own ADL layers travel in config.json and come back.
    place_in_cache(out, hf_cache, 'acme/mnv1.cub')
    assert_same_model(paper_model, timm.create_model('hf-hub:acme/mnv1.cub', pretrained=True))

    # Defaults: the run's best validation metrics, on the recipe's val split.
    assert cli_main(['push', str(run_dir), '--repo-id', 'acme/x', '--dry-run', str(tmp_path / 'v')]) == 0
    assert '## Results on CUB-200-2011, val split' in (tmp_path / 'v' / 'README.md').read_text()


def test_push_command_errors(run_dir, tmp_path, capsys):
    assert (
        cli_main(['push', str(run_dir / 'config.yaml'), '--repo-id', 'a/b', '--dry-run', str(tmp_path / 'o')])
        == 2
    )
    assert '.safetensors' in capsys.readouterr().err
    bare = tmp_path / 'w.safetensors'
    shutil.copyfile(run_dir / 'best.safetensors', bare)
    assert cli_main(['push', str(bare), '--repo-id', 'a/b', '--dry-run', str(tmp_path / 'o')]) == 2
    assert '--model' in capsys.readouterr().err
    assert (
        cli_main(
            ['push', str(bare), '--repo-id', 'a/b', '--model', 'resnet18', '--dry-run', str(tmp_path / 'o')]
        )
        == 2
    )
    assert 'does not fit resnet18' in capsys.readouterr().err
    assert (
        cli_main(
            [
                'push',
                str(run_dir),
                '--repo-id',
                'a/b',
                '--metrics',
                str(bare),
                '--dry-run',
                str(tmp_path / 'o'),
            ]
        )
        == 2
    )
    assert 'not valid JSON' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()
    # A bare .safetensors with --model: the default ADL settings, 4 classes read from the weights.
    assert (
        cli_main(
            [
                'push',
                str(bare),
                '--repo-id',
                'a/b',
                '--model',
                'mobilenetv1_adl',
                '--dry-run',
                str(tmp_path / 'o'),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / 'o' / 'config.json').read_text())['num_classes'] == 4


def test_family_with_new_layers_loads_its_own_weights(tmp_path):
    """VGG16-GAP (like InceptionV3, through the same shared_weights_filter) adapts timm's ImageNet checkpoint:
    conv6 and the 1024-wide head are new layers. A checkpoint of the model itself must load as it is, trained
    layers and all, never re-initialised."""
    name = 'vgg16_gap'
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # unlike any fresh initialisation
    folder = hub.save_pretrained(model, tmp_path / name)
    loaded, _ = timm_adl.load(folder)
    assert_same_model(model, loaded)
