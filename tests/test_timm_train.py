"""``python -m timm_adl.timm_train``: timm's own train.py with timm-adl's architectures registered."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm

from timm_adl import timm_train
from timm_adl.data.synthetic import SyntheticConfig, make_synthetic_wsol

ROOT = Path(__file__).resolve().parents[1]
# timm's train.py, vendored as a test fixture (see its header); $TIMM_TRAIN_SCRIPT runs the user's copy instead.
FIXTURE = ROOT / 'tests' / 'timm_upstream' / 'train.py'

# A stand-in train.py: records what it was run with and whether timm knows timm-adl's architectures.
_RECORDER = textwrap.dedent(
    """
    import json, sys
    import timm
    out = sys.argv[sys.argv.index('--record') + 1]
    with open(out, 'w') as f:
        json.dump({'argv': sys.argv[1:], 'known': timm.is_model('adl_inserted'), 'main': __name__}, f)
    """
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != timm_train.ENV_VAR}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    env['HF_HUB_OFFLINE'] = '1'
    return env


def test_find_order_explicit_then_env_then_cwd(tmp_path):
    explicit, from_env, local = (tmp_path / d / 'train.py' for d in ('a', 'b', 'c'))
    for path in (explicit, from_env, local):
        path.parent.mkdir()
        path.write_text('')
    env = {timm_train.ENV_VAR: str(from_env)}
    assert timm_train.find_train_script(explicit, env, local.parent) == explicit
    assert timm_train.find_train_script(None, env, local.parent) == from_env
    assert timm_train.find_train_script(None, {}, local.parent) == local


def test_missing_script_says_where_to_get_it(tmp_path):
    tag = f'v{timm.__version__}'
    with pytest.raises(FileNotFoundError) as info:
        timm_train.find_train_script(None, {}, tmp_path)
    message = str(info.value)
    assert f'--branch {tag}' in message and 'pytorch-image-models' in message
    assert f'{tag}/train.py' in message and timm_train.ENV_VAR in message
    # A path that is given but wrong is an error, never a fall-through to ./train.py.
    (tmp_path / 'train.py').write_text('')
    with pytest.raises(FileNotFoundError, match=r"--train-script '/nope/train\.py' is not a file"):
        timm_train.find_train_script('/nope/train.py', {}, tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{timm_train.ENV_VAR} 'typo\.py' is not a file"):
        timm_train.find_train_script(None, {timm_train.ENV_VAR: 'typo.py'}, tmp_path)


def test_main_passes_every_other_argument_to_the_script(tmp_path, monkeypatch):
    # In process, as `python -m timm_adl.timm_train` runs it (the slow test below runs the real command).
    script, record = tmp_path / 'train.py', tmp_path / 'record.json'
    script.write_text(_RECORDER)
    monkeypatch.delenv(timm_train.ENV_VAR, raising=False)
    args = ['--model', 'adl_inserted', '--train-split', 'train', '--record', str(record)]
    saved_argv = sys.argv[:]
    timm_train.main(['--train-script', str(script), *args])
    assert json.loads(record.read_text()) == {'argv': args, 'known': True, 'main': '__main__'}
    assert sys.argv == saved_argv  # the script's argv does not leak into the caller


def test_main_without_script_exits_with_the_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv(timm_train.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        timm_train.main(['--model', 'resnet50_se_adl'])
    message = str(info.value.code)
    assert message.startswith('timm_adl.timm_train: no train.py given')
    assert 'git clone --depth 1 --branch v' in message


@pytest.mark.slow
def test_timm_train_py_trains_an_inserted_model_one_step(tmp_path):
    script = os.environ.get(timm_train.ENV_VAR) or (FIXTURE if FIXTURE.is_file() else None)
    if script is None:
        pytest.skip(
            f"timm's train.py is not available offline: set {timm_train.ENV_VAR} (docs/timm_compat.md)"
        )
    sizes = {'train': 6, 'train-fullsup': 6, 'val': 6, 'test': 6}
    cfg = SyntheticConfig(sizes=sizes)
    data = make_synthetic_wsol(tmp_path / 'synthetic', seed=0, config=cfg)
    # images/<split>/<class>/ is an ImageFolder tree; a tiny split may miss a class, so the class map
    # pins every split to the same label indices.
    class_map = tmp_path / 'classes.txt'
    class_map.write_text(''.join(f'{k:02d}\n' for k in range(cfg.num_classes)))
    out = tmp_path / 'runs'
    args = [
        '--train-script', str(script),
        '--data-dir', str(data / 'images'), '--train-split', 'train', '--val-split', 'val',
        '--class-map', str(class_map), '--num-classes', str(cfg.num_classes),
        '--model', 'adl_inserted',
        '--model-kwargs', 'base_architecture=convnext_atto', "adl_points={'stages.2': {'drop_rate': 0.75}}",
        '--img-size', '64', '-b', '6', '-vb', '6', '--epochs', '1', '--warmup-epochs', '0',
        '--workers', '0', '--device', 'cpu', '--output', str(out), '--experiment', 'one-step',
    ]  # fmt: skip
    cmd = [sys.executable, '-m', 'timm_adl.timm_train', *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'Model adl_inserted created' in done.stdout + done.stderr
    run = out / 'one-step'
    summary = (run / 'summary.csv').read_text().splitlines()
    assert len(summary) == 2 and summary[0].startswith('epoch,train_loss')
    train_loss = float(summary[1].split(',')[1])
    assert 0 < train_loss < 10
    recorded = (run / 'args.yaml').read_text()
    assert 'base_architecture: convnext_atto' in recorded and 'stages.2' in recorded
