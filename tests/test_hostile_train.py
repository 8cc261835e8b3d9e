"""Hostile inputs to the trainer (issue 12): two runs on one folder, damaged resume pairs, a damaged initial
checkpoint, a bad insertion point, non-finite numbers, --resume into nothing."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fakes
import pytest
import torch
from fakes import TINY_MODEL, make_fake_wsol_metadata
from safetensors.torch import load_file

from timm_adl.cli import main
from timm_adl.train import ConfigError, load_config, run_training
from timm_adl.train.checkpoint import save_resume_point

LOCK_NAME = '.timm-adl.lock'


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=2)  # 4 images per split
    return root


def tiny_recipe(root: Path, out: Path, **over) -> dict:
    """The shared tiny recipe at batch 2: this module's tree has 4 images per split."""
    return fakes.tiny_recipe(root, out, **{'batch_size': 2, **over})


def write_recipe(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / 'recipe.yaml'
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith('timm-adl train: error: ') and err.count('\n') == 1, err
    assert 'Traceback' not in err
    return err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------------------
# one run per output folder


# The first run: a real `timm-adl train` process that stops right after writing config.yaml (the point where
# main's "already holds a run" check still saw nothing) until the test lets it go on.
FIRST_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import timm_adl.train.engine as engine
    from timm_adl.cli import main

    go = Path(sys.argv[1])
    save = engine.save_config

    def save_then_wait(cfg, path):
        save(cfg, path)
        deadline = time.time() + 120
        while not go.exists() and time.time() < deadline:
            time.sleep(0.05)

    engine.save_config = save_then_wait
    raise SystemExit(main(['train', sys.argv[2], '--no-progress']))
    """
)


@pytest.mark.slow
def test_two_runs_on_one_output_dir_second_stops_naming_the_first(data_root, tmp_path):
    out = tmp_path / 'run'
    recipe = write_recipe(tmp_path, tiny_recipe(data_root, out, epochs=1))
    script, go = tmp_path / 'first.py', tmp_path / 'go'
    script.write_text(FIRST_RUN)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, str(script), str(go), str(recipe)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (out / 'config.yaml').exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (out / 'config.yaml').exists(), first.communicate(timeout=5)
        second = subprocess.run(
            [sys.executable, '-m', 'timm_adl', 'train', str(recipe), '--no-progress'],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    assert second.stderr.count('\n') == 1 and 'Traceback' not in second.stderr, second.stderr
    assert f'PID {first.pid} on host {socket.gethostname()}' in second.stderr
    assert not (out / LOCK_NAME).exists()  # released when the first run ended
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['steps'] == 2  # only the first run trained: 4 images / batch 2 * 1 epoch


def test_held_output_dir_refused_at_once_in_one_line(data_root, tmp_path, capsys):
    from timm_adl.train.lock import acquire_run_lock

    out = tmp_path / 'run'
    lock = acquire_run_lock(out)  # this test process is "the first run"
    try:
        recipe = write_recipe(tmp_path, tiny_recipe(data_root, out))
        assert main(['train', str(recipe), '--no-progress']) == 2
        err = one_line_error(capsys)
        assert f'output_dir {out} is in use by another run: PID {os.getpid()} on host' in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the second run written
    finally:
        lock.release()
    assert not out.exists()  # the folder the lock created, left empty, is removed


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    from timm_adl.train.lock import acquire_run_lock

    out = tmp_path / 'run'
    out.mkdir()
    pid = dead_pid()
    holder = dict(pid=pid, host=socket.gethostname(), started='2026-01-01T00:00:00')
    (out / LOCK_NAME).write_text(json.dumps(holder))
    warnings: list[str] = []
    lock = acquire_run_lock(out, warnings.append)
    try:
        assert len(warnings) == 1 and f'stale lock of PID {pid}' in warnings[0]
        assert json.loads((out / LOCK_NAME).read_text())['pid'] == os.getpid()
    finally:
        lock.release()
    assert out.is_dir() and not (out / LOCK_NAME).exists()  # a folder that existed before stays


def test_lock_file_of_another_host_is_not_taken_over(tmp_path):
    from timm_adl.train.lock import RunLockedError, acquire_run_lock

    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(pid=1, host='elsewhere.example', started='x')))
    with pytest.raises(RunLockedError, match=r'on host elsewhere\.example'):
        acquire_run_lock(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# resume pairs


def test_previous_resume_pair_is_kept_until_a_newer_one_is_complete(tmp_path):
    sd = {'w': torch.ones(2)}
    for step in (4, 8, 12):
        save_resume_point(tmp_path, step, sd, {'step': step})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'state-000000008.pt',
        'state-000000012.pt',
        'weights-000000008.safetensors',
        'weights-000000012.safetensors',
    ]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize('damaged', ['weights', 'state'])
def test_damaged_newest_resume_pair_falls_back_to_the_previous_one(data_root, tmp_path, capsys, damaged):
    """A finished 2-epoch run, its newest resume file truncated: --resume redoes epoch 2 from the pair of
    epoch 1, warns naming the damaged file, and ends with the same weights (CPU runs are bit-exact)."""
    torch.set_num_threads(1)
    out = tmp_path / 'run'
    no_val = dict(name='wsol-metadata', root=str(data_root), val_split=None)
    cfg = load_config(tiny_recipe(data_root, out, data=no_val))
    run_training(cfg, progress=False)
    # Copies: load_file maps the file, and last.safetensors is a hard link of the newest resume weights.
    before = {k: v.clone() for k, v in load_file(str(out / 'last.safetensors')).items()}
    suffix = 'safetensors' if damaged == 'weights' else 'pt'
    bad = out / 'resume' / f'{damaged}-000000004.{suffix}'
    _truncate(bad)
    capsys.readouterr()

    result = run_training(cfg, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f'warning: damaged resume file {bad}' in err and 'previous pair (step 2)' in err, err
    assert result['steps'] == 4
    after = load_file(str(out / 'last.safetensors'))
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_every_resume_pair_damaged_is_one_clear_error(tmp_path):
    from timm_adl.train.checkpoint import load_resume_point

    sd = {'w': torch.ones(2)}
    save_resume_point(tmp_path, 1, sd, {'step': 1})
    (tmp_path / 'state-000000001.pt').write_bytes(b'not a torch file')
    with pytest.raises(ConfigError, match=r'every resume point in .* is damaged: damaged resume file'):
        load_resume_point(tmp_path)


def test_resume_into_a_missing_folder_is_an_error(data_root, tmp_path, capsys):
    out = tmp_path / 'nothing-here'
    recipe = write_recipe(tmp_path, tiny_recipe(data_root, out))
    assert main(['train', str(recipe), '--resume', '--no-progress']) == 2
    assert f'--resume: output_dir {out} does not exist' in one_line_error(capsys)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------
# recipes and starting weights: one line, exit 2, before any work


@pytest.mark.parametrize(
    ('override', 'message'),
    [
        ('adl.after=[layer9]', "adl.after: unknown insertion point 'layer9' for ResNet (closest: layer4"),
        ('optim.lr=.nan', "config key 'optim.lr' expects a finite number, got nan"),
        ('optim.momentum=.inf', "config key 'optim.momentum' expects a finite number, got inf"),
        ('data.mean=[0.5, .nan, 0.5]', "config key 'data.mean[1]' expects a finite number"),
    ],
)
def test_bad_recipe_values_are_one_line_before_any_work(data_root, tmp_path, capsys, override, message):
    out = tmp_path / 'run'
    recipe = write_recipe(tmp_path, tiny_recipe(data_root, out))
    assert main(['train', str(recipe), override, '--no-progress']) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()  # no folder holding only config.yaml


def test_non_finite_number_in_a_config_built_in_code_is_refused(data_root, tmp_path):
    cfg = load_config(tiny_recipe(data_root, tmp_path / 'run'))
    cfg.optim.lr = float('nan')  # a TrainConfig edited in code skips load_config's checks
    with pytest.raises(ConfigError, match=r"'optim\.lr' expects a finite number"):
        run_training(cfg, progress=False)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('kind', ['truncated', 'pickle'])
def test_damaged_initial_checkpoint_is_one_line(data_root, tmp_path, capsys, kind):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / 'start.safetensors'
    if kind == 'truncated':
        save_file(timm.create_model('resnet10t', **TINY_MODEL['model_kwargs']).state_dict(), str(path))
        _truncate(path)
    else:
        path.write_bytes(pickle.dumps({'conv1.weight': [1.0]}))
    out = tmp_path / 'run'
    recipe = write_recipe(tmp_path, tiny_recipe(data_root, out))
    assert main(['train', str(recipe), f'initial_checkpoint={path}', '--no-progress']) == 2
    assert f'{path} is corrupted or truncated' in one_line_error(capsys)
    assert not out.exists()


def test_damaged_initial_checkpoint_raises_corrupt_checkpoint_error(data_root, tmp_path):
    from timm_adl.hub import CorruptCheckpointError

    path = tmp_path / 'start.safetensors'
    path.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}')
    cfg = load_config(tiny_recipe(data_root, tmp_path / 'run', initial_checkpoint=str(path)))
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(path))):
        run_training(cfg, progress=False)
    shutil.rmtree(tmp_path / 'run', ignore_errors=True)
