"""``timm-adl study``: a tiny grid (2 cells x 2 seeds, 1 epoch of a 32-px net on a fake wsol tree) trains,
reports mean ± sd that match the per-seed results, never re-runs a finished run, continues after a kill
with the same numbers, and refuses bad study files with one line. The shipped studies load."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from fakes import make_fake_wsol_metadata, tiny_recipe

import timm_adl  # noqa: F401  (registers the WSOL models the CUB studies name)
from timm_adl.cli import main
from timm_adl.study import StudyError, list_studies, load_study, mean_sd, run_study
from timm_adl.study.report import METRICS
from timm_adl.study.runner import plan_jobs
from timm_adl.study.spec import BEST_REF, check_cell
from timm_adl.surgery import insert
from timm_adl.train import ConfigError, load_config
from timm_adl.train.recipes import resolve_recipe

REPO = Path(__file__).resolve().parents[1]


def _write_study(folder: Path, data: Path, **changes) -> Path:
    """A tiny recipe file and a 2-cell x 2-seed study over it; ``changes`` replace study keys."""
    recipe = tiny_recipe(data, folder / 'unused', epochs=1)
    recipe['data']['metadata_root'] = str(data / 'metadata')
    (folder / 'tiny.yaml').write_text(yaml.safe_dump(recipe))
    study = {
        'name': 'tiny',
        'description': 'two cells, two seeds',
        'seeds': [0, 1],
        'cells': [
            {'name': 'cam', 'recipe': 'tiny.yaml'},
            {'name': 'adl', 'recipe': 'tiny.yaml', 'overrides': ['adl.after=[layer4]', 'adl.gamma=0.5']},
        ],
    }
    study.update(changes)
    path = folder / 'study.yaml'
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, splits=('train', 'val', 'test'), per_class=4)
    return root


@pytest.fixture(scope='module')
def finished(tmp_path_factory, data_root):
    """One uninterrupted run of the tiny study: (study file, study folder, StudyResult)."""
    folder = tmp_path_factory.mktemp('study')
    path = _write_study(folder, data_root)
    out = folder / 'out'
    result = run_study(load_study(path), out, device='cpu', progress=False, log=lambda line: None)
    return path, out, result


def test_report_is_mean_sd_of_the_per_seed_results(finished):
    _, out, result = finished
    assert result.done and [c.name for c in result.cells] == ['cam', 'adl']
    report = json.loads((out / 'report.json').read_text())
    assert report['done'] and [c['name'] for c in report['cells']] == ['cam', 'adl']
    md = (out / 'report.md').read_text()
    for cell in report['cells']:
        per_seed = [
            json.loads((out / 'runs' / cell['name'] / f'seed{s}' / 'result.json').read_text()) for s in (0, 1)
        ]
        assert [r['seed'] for r in per_seed] == [0, 1]
        for key, _ in METRICS:
            values = [r['metrics'][key] for r in per_seed]
            m = sum(values) / 2
            sd = math.sqrt(sum((v - m) ** 2 for v in values))  # n - 1 = 1
            stat = cell['stats'][key]
            assert stat['n'] == 2 and stat['mean'] == pytest.approx(m) and stat['sd'] == pytest.approx(sd)
        t = [r['train_seconds'] for r in per_seed]
        assert cell['stats']['train_seconds']['mean'] == pytest.approx(sum(t) / 2)
        assert cell['cam_threshold'] == 0.2 and all(r['cam_threshold'] == 0.2 for r in per_seed)
        assert all(0 <= r['best_threshold'] < 1 for r in per_seed)
        assert (out / cell['figure']).is_file() and cell['figure'] == f'figures/{cell["name"]}.png'
        row = next(line for line in md.splitlines() if line.startswith(f'| {cell["name"]} |'))
        m, sd = mean_sd([r['metrics']['top1_clas'] for r in per_seed])
        assert f'| 2/2 | {m:.1f} ± {sd:.1f} |' in row
    assert md.count('\n| ') == 3  # one table: header and two rows
    assert not list(out.glob('.timm-adl.lock'))  # the study released its folder


def test_a_finished_study_is_not_trained_again(finished, monkeypatch):
    path, out, result = finished

    def refuse(*args, **kwargs):
        raise AssertionError('a finished run was trained again')

    monkeypatch.setattr('timm_adl.train.run_training', refuse)
    before = (out / 'report.json').read_text()
    # a run saved before the trainer had a key: that key counts as its default, not as a change
    saved = out / 'runs/cam/seed0/config.yaml'
    cfg = yaml.safe_load(saved.read_text())
    del cfg['cam_method']
    saved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    again = run_study(load_study(path), out, device='cpu', log=lambda line: None)
    assert again.to_dict() == result.to_dict()
    assert (out / 'report.json').read_text() == before
    assert main(['study', str(path), '--out', str(out), '--report-only', '--json', str(out / 'r.json')]) == 0
    assert json.loads((out / 'r.json').read_text()) == json.loads(before)


def test_a_changed_study_file_is_refused_for_finished_runs(finished, capsys):
    path, out, _ = finished
    spec = yaml.safe_load(path.read_text())
    spec['overrides'] = ['optim.lr=0.01']
    changed = path.parent / 'changed.yaml'
    changed.write_text(yaml.safe_dump(spec))
    with pytest.raises(
        StudyError, match=r'cam seed 0 finished with another config .*optim\.lr: 0\.05 -> 0\.01'
    ):
        run_study(load_study(changed), out, device='cpu', log=lambda line: None)
    assert main(['study', str(changed), '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        'timm-adl study: error: cam seed 0 finished with another config'
    )


def test_identical_cells_share_one_run(finished, monkeypatch):
    path, out, _ = finished
    spec = yaml.safe_load(path.read_text())
    spec['cells'].append({'name': 'cam_again', 'recipe': 'tiny.yaml', 'overrides': ['optim.lr=0.05']})
    path2 = path.parent / 'again.yaml'
    path2.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr('timm_adl.train.run_training', lambda *a, **k: pytest.fail('trained'))
    result = run_study(load_study(path2), out, device='cpu', log=lambda line: None)
    cam, again = result.cells[0], result.cells[2]
    assert again.same_as == ('cam',) and again.stats == cam.stats and again.done


@pytest.mark.slow
def test_a_killed_study_continues_to_the_same_report(finished, tmp_path, data_root):
    _, _, uninterrupted = finished
    path = _write_study(tmp_path, data_root)
    out = tmp_path / 'out'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), str(REPO / 'tests')])}
    cmd = [
        sys.executable,
        '-m',
        'timm_adl',
        'study',
        str(path),
        '--out',
        str(out),
        '--device',
        'cpu',
        '--no-progress',
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / 'runs' / 'cam' / 'seed0' / 'result.json'
    deadline = time.monotonic() + 120
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.is_file(), proc.stderr.read().decode()[-2000:]
    assert not (out / 'report.json').is_file()  # killed before the end
    mtime = first.stat().st_mtime_ns
    lines: list[str] = []
    resumed = run_study(load_study(path), out, device='cpu', progress=False, log=lines.append)
    assert first.stat().st_mtime_ns == mtime  # the finished run was kept, not trained again
    assert any('1 finished' in line for line in lines), lines
    assert any(line.startswith('[2/4] cam seed 1 ... done in') for line in lines), lines
    for a, b in zip(resumed.cells, uninterrupted.cells, strict=True):
        assert [r.metrics for r in a.runs] == [r.metrics for r in b.runs]
        assert [r.best_threshold for r in a.runs] == [r.best_threshold for r in b.runs]


# ---------------------------------------------------------------------------------------------------------
# the study file


def _study(tmp_path: Path, text: str) -> Path:
    (tmp_path / 'tiny.yaml').write_text(yaml.safe_dump(tiny_recipe(tmp_path / 'data', tmp_path / 'unused')))
    path = tmp_path / 'study.yaml'
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        (
            'name: x\nseed: [0]\ncells: [{name: a, recipe: tiny.yaml}]\n',
            r"unknown key 'seed' \(did you mean 'seeds'\?\)",
        ),
        (
            'cells: [{name: a, recipe: tiny.yaml, overide: [epochs=2]}]\n',
            r"cells\[0\]: unknown key 'overide' \(did you mean 'overrides'\?\)",
        ),
        (
            'cells: [{name: a, recipe: cub/resnet50_se_adll}]\n',
            r"cell 'a': recipe file not found: cub/resnet50_se_adll .*closest: cub/resnet50_se_adl",
        ),
        ('cells: [{name: a, recipe: tiny.yaml}, {name: a, recipe: tiny.yaml}]\n', r"duplicate cell name 'a'"),
        (
            'cells: [{name: a, recipe: tiny.yaml, overrides: [optim.lrr=0.1]}]\n',
            r"cell 'a': unknown config key 'optim.lrr' \(did you mean 'optim.lr'\?\)",
        ),
        (
            'eval_split: tset\ncells: [{name: a, recipe: tiny.yaml}]\n',
            r"eval_split 'tset' must be one of test, val, train-fullsup \(did you mean 'test'\?\)",
        ),
        (
            'data: {synthetic: defualt}\ncells: [{name: a, recipe: tiny.yaml}]\n',
            r"unknown synthetic variant 'defualt' \(did you mean 'default'\?\)",
        ),
        ('cells: [{name: ../a, recipe: tiny.yaml}]\n', r"cell name '../a' must be"),
        ('seeds: [0, 0]\ncells: [{name: a, recipe: tiny.yaml}]\n', r'seeds has repeats'),
        (
            'cells: [{name: a, recipe: tiny.yaml, overrides: ["initial_checkpoint={best:b}"]}]\n',
            r'uses \{best:b\}: no such cell',
        ),
        ('name: x\n', r'has no cells'),
        ('cells: [\n', r'line \d+ is not valid YAML'),
    ],
)
def test_bad_study_files_are_one_line_errors(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = _study(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_study(path)
    assert '\n' not in str(info.value)


def test_unknown_study_name_lists_the_closest(capsys):
    with pytest.raises(
        StudyError, match=r'study file not found: synthetic/tabel1 .*closest: synthetic/table1'
    ):
        load_study('synthetic/tabel1')
    assert main(['study', 'synthetic/tabel1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('timm-adl study: error: study file not found')


DEPS = """
seeds: [0, 1]
cells:
  - {name: ft, recipe: tiny.yaml, overrides: ['initial_checkpoint={best:pre}']}
  - {name: ft_same_seed, recipe: tiny.yaml, overrides: ['initial_checkpoint={best:pre2}', epochs=2]}
  - {name: pre, recipe: tiny.yaml, seeds: [0]}
  - {name: pre2, recipe: tiny.yaml, overrides: [epochs=3]}
  - {name: pre_twin, recipe: tiny.yaml, seeds: [0]}
  - {name: ft_twin, recipe: tiny.yaml, seeds: [0], overrides: ['initial_checkpoint={best:pre_twin}', epochs=4]}
"""


def test_best_placeholders_resolve_and_order_the_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_study(_study(tmp_path, DEPS))
    assert [c.name for c in spec.cells] == ['pre', 'ft', 'pre2', 'ft_same_seed', 'pre_twin', 'ft_twin']
    assert spec.cell('ft').depends_on == ('pre',)
    out = tmp_path / 'out'
    jobs = {(j.cell.name, j.seed): j for j in plan_jobs(spec, out)}
    for seed in (0, 1):  # 'pre' trains seed 0 only: both seeds start from it
        assert jobs['ft', seed].config.initial_checkpoint == str(out / 'runs/pre/seed0/best.safetensors')
        assert jobs['ft_same_seed', seed].config.initial_checkpoint == str(
            out / f'runs/pre2/seed{seed}/best.safetensors'
        )
        assert jobs['ft', seed].config.seed == seed
        assert jobs['ft', seed].config.output_dir == str(out / f'runs/ft/seed{seed}')
    assert [c.name for c in spec.select(['ft']).cells] == ['pre', 'ft']
    # 'pre_twin' is 'pre' (same config and seed): one run, and its weights are that run's
    assert (
        jobs['pre_twin', 0].same_as == 'pre seed 0' and jobs['pre_twin', 0].run_dir == out / 'runs/pre/seed0'
    )
    assert jobs['ft_twin', 0].config.initial_checkpoint == str(out / 'runs/pre/seed0/best.safetensors')


@pytest.mark.parametrize(
    ('cells', 'message'),
    [
        (
            "[{name: a, recipe: tiny.yaml, overrides: ['initial_checkpoint={best:b}']},"
            " {name: b, recipe: tiny.yaml, overrides: ['initial_checkpoint={best:a}']}]",
            r'cycle: a -> b -> a',
        ),
        (
            '[{name: a, recipe: tiny.yaml, seeds: [0, 1]},'
            " {name: b, recipe: tiny.yaml, seeds: [2], overrides: ['initial_checkpoint={best:a}']}]",
            r"cell 'b' needs \{best:a\} for seeds \[2\], but 'a' trains seeds \[0, 1\]",
        ),
    ],
)
def test_dependency_errors(tmp_path, monkeypatch, cells, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError, match=message):
        load_study(_study(tmp_path, f'cells: {cells}\n'))


def test_grid_and_include(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _study(tmp_path, '')
    (tmp_path / 'part.yaml').write_text(
        'name: part\ncells: [{name: pre, recipe: tiny.yaml, seeds: [0]}]\n'
        "grid: {recipes: {r: tiny.yaml}, overrides: {a: [epochs=2], b: ['initial_checkpoint={best:pre}']}}\n"
    )
    (tmp_path / 'all.yaml').write_text('name: all\nseeds: [3]\ninclude: [part.yaml]\n')
    spec = load_study(tmp_path / 'all.yaml', seeds=[5, 6])
    assert [c.name for c in spec.cells] == ['part/pre', 'part/r-a', 'part/r-b']
    assert spec.groups == ('part',)
    assert spec.cell('part/r-b').overrides == ('initial_checkpoint={best:part/pre}',)
    assert spec.cell('part/r-a').seeds == (5, 6) and spec.cell('part/pre').seeds == (0,)


# ---------------------------------------------------------------------------------------------------------
# the shipped studies


@pytest.mark.parametrize('info', list_studies(), ids=lambda s: s.name)
def test_shipped_studies_load(info):
    spec = load_study(info.path, check=False)
    assert spec.cells and spec.description
    for cell in spec.cells:
        check_cell(cell)
        overrides = [BEST_REF.sub('/run/best.safetensors', o) for o in cell.overrides]
        cfg = load_config(resolve_recipe(cell.recipe), overrides)
        if cfg.adl is not None and cfg.adl.after:  # the insertion points exist in the model
            with torch.device('meta'):
                model = timm.create_model(cfg.model, pretrained=False, **cfg.model_kwargs)
                insert(model, after=cfg.adl.after)


def test_shipped_study_names(capsys):
    names = {s.name for s in list_studies()}
    assert {
        f'{d}/{t}' for d in ('synthetic', 'cub') for t in ('table1', 'table2', 'table3', 'paper')
    } <= names
    assert main(['study', '--list']) == 0
    assert sorted(line.split()[0] for line in capsys.readouterr().out.splitlines()) == sorted(names)
    paper = load_study('synthetic/paper', check=False)
    assert paper.groups == ('synthetic-table1', 'synthetic-table2', 'synthetic-table3')
    assert paper.cell('table3/cam_ft').depends_on == ('table3/pretrain',)


# ---------------------------------------------------------------------------------------------------------
# the synthetic set, end to end


@pytest.mark.slow
def test_synthetic_study_with_a_pretrained_cell(tmp_path):
    sizes = {'train': 64, 'train-fullsup': 8, 'val': 16, 'test': 16}
    study = {
        'name': 'synth',
        'data': {'synthetic': 'default', 'sizes': sizes},
        'seeds': [0],
        'overrides': ['epochs=1', 'batch_size=32', 'eval_every=1'],
        'cells': [
            {'name': 'ft', 'recipe': 'synthetic/adl', 'overrides': ['initial_checkpoint={best:pre}']},
            {'name': 'pre', 'recipe': 'synthetic/cam'},
        ],
    }
    path = tmp_path / 'synth.yaml'
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / 'out'
    lines: list[str] = []
    result = run_study(load_study(path), out, device='cpu', progress=False, figure_images=2, log=lines.append)
    assert [c.name for c in result.cells] == ['pre', 'ft'] and result.done
    data = next((out / 'data').glob('default-*'))
    assert json.loads((data / 'synthetic.json').read_text())  # made once, in the study folder
    ft = yaml.safe_load((out / 'runs/ft/seed0/config.yaml').read_text())
    assert ft['initial_checkpoint'] == str(out.resolve() / 'runs/pre/seed0/best.safetensors')
    assert ft['data']['root'] == str(data.resolve())
    assert result.cells[1].runs[0].num_images == 16
    assert any(line.startswith('[2/2] ft seed 0 ... done in') for line in lines), lines


def test_cells_flag_checks_only_the_cells_it_runs(tmp_path, capsys):
    path = _study(
        tmp_path,
        'cells: [{name: a, recipe: tiny.yaml}, {name: b, recipe: synthetic/not_yet},'
        " {name: c, recipe: tiny.yaml, overrides: ['initial_checkpoint={best:a}']}]\n",
    )
    out = tmp_path / 'out'
    assert main(['study', str(path), '--out', str(out), '--cells', 'c', '--report-only', '--json', '-']) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c['name'] for c in report['cells']] == ['a', 'c'] and not report['done']
    assert main(['study', str(path), '--out', str(out), '--report-only']) == 2
    assert "cell 'b': recipe file not found: synthetic/not_yet" in capsys.readouterr().err
