"""The package without a checkout: packaged recipes by name, their listing, and what the wheel and sdist carry.

CI (.ci/run) also installs the wheel into a fresh environment and runs the demo from outside the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from timm_adl.cli import main
from timm_adl.train import ConfigError, load_config
from timm_adl.train.recipes import list_recipes, recipes_dir, resolve_recipe

REPO = Path(__file__).resolve().parents[1]
PAPER_BACKBONES = ('vgg16_gap', 'resnet50_se', 'mobilenetv1', 'inception_v3')


def test_every_recipe_file_is_listed_with_a_summary():
    on_disk = sorted(
        p.relative_to(REPO / 'recipes').with_suffix('').as_posix() for p in REPO.glob('recipes/*/*.yaml')
    )
    listed = list_recipes()
    assert [r.name for r in listed] == on_disk
    for dataset in ('cub', 'imagenet'):
        for backbone in PAPER_BACKBONES:
            for method in ('cam', 'adl'):
                assert f'{dataset}/{backbone}_{method}' in on_disk
    assert all(r.summary and not r.summary.startswith('#') for r in listed)


@pytest.mark.parametrize(
    'given', ['cub/resnet50_se_adl', 'cub/resnet50_se_adl.yaml', 'recipes/cub/resnet50_se_adl.yaml']
)
def test_recipe_by_name(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: the name must reach the packaged file
    path = resolve_recipe(given)
    assert path == recipes_dir() / 'cub' / 'resnet50_se_adl.yaml'
    assert load_config(path).model == 'resnet50_se_adl'


def test_recipe_path_wins_over_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / 'cub' / 'resnet50_se_adl.yaml'
    own.parent.mkdir()
    own.write_text('model: resnet18\n')
    assert resolve_recipe('cub/resnet50_se_adl.yaml') == Path('cub/resnet50_se_adl.yaml')
    assert resolve_recipe('cub/resnet50_se_adl') == recipes_dir() / 'cub' / 'resnet50_se_adl.yaml'


def test_unknown_recipe_names_the_closest():
    with pytest.raises(
        ConfigError,
        match=r'not found: cub/resnet50_adl \(nor a packaged recipe name; closest: cub/resnet50_se_adl\b',
    ):
        resolve_recipe('cub/resnet50_adl')


def test_cli_lists_and_loads_packaged_recipes(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(['recipes']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list_recipes())
    assert any(line.startswith('cub/resnet50_se_adl ') for line in lines)
    assert main(['train', '--list']) == 0
    assert capsys.readouterr().out.splitlines() == lines

    assert main(['train', 'imagenet/vgg16_gap_cam', 'epochs=3', '--print-config']) == 0
    out = capsys.readouterr().out
    assert 'model: vgg16_gap\n' in out and 'epochs: 3\n' in out

    assert main(['train', 'cub/nope']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'recipe file not found: cub/nope' in err[0]
    assert main(['train']) == 2


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip('tomllib')
    config = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['setuptools']
    expected = {'.'.join(p.relative_to(REPO).parent.parts) for p in REPO.glob('timm_adl/**/__init__.py')}
    for data in ('recipes', 'studies'):  # YAML folders mapped into the package
        expected |= {f'timm_adl.{data}'} | {
            f'timm_adl.{data}.{p.name}' for p in REPO.glob(f'{data}/*/') if p.is_dir()
        }
    assert set(config['packages']) == expected
    assert config['package-dir'] == {'timm_adl.recipes': 'recipes', 'timm_adl.studies': 'studies'}
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    assert project['license'] == 'Apache-2.0' and project['license-files'] == ['LICENSE']
    assert (REPO / 'LICENSE').read_text().lstrip().startswith('Apache License')


def _copy_source(dst: Path) -> Path:
    """The repository's files (tests and docs included, so their absence from the dists is checked)."""
    ignore = shutil.ignore_patterns(
        '.venv', '.git', 'build', 'dist', '*.egg-info', '__pycache__', 'output', 'runs'
    )
    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_package_and_recipes_only(tmp_path):
    src = _copy_source(tmp_path / 'src')
    dist = tmp_path / 'dist'
    dist.mkdir()
    # build_meta rewrites sys.argv: the folder is read before the first call.
    code = 'import sys; from setuptools import build_meta as b; d = sys.argv[1]; b.build_wheel(d); b.build_sdist(d)'
    subprocess.run([sys.executable, '-c', code, str(dist)], cwd=src, check=True, capture_output=True)
    (wheel,) = dist.glob('*.whl')
    (sdist,) = dist.glob('*.tar.gz')

    names = zipfile.ZipFile(wheel).namelist()
    recipes = {p.relative_to(REPO).as_posix() for p in REPO.glob('recipes/*/*.yaml')}
    assert {f'timm_adl/{r}' for r in recipes} <= set(names)
    studies = {p.relative_to(REPO).as_posix() for p in REPO.glob('studies/*/*.yaml')}
    assert studies and {f'timm_adl/{s}' for s in studies} <= set(names)
    modules = {p.relative_to(REPO).as_posix() for p in REPO.glob('timm_adl/**/*.py')}
    assert modules <= set(names)
    assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
    assert all(n.startswith(('timm_adl/', 'timm_adl-')) for n in names), names

    with tarfile.open(sdist) as tar:
        members = [m.split('/', 1)[1] for m in tar.getnames() if '/' in m]
    assert {'LICENSE', 'README.md', 'pyproject.toml'} <= set(members)
    assert recipes <= set(members) and studies <= set(members)
    assert not [m for m in members if m.split('/')[0] in ('tests', 'docs', 'benchmarks', '.ci')]
