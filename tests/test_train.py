"""The trainer: a CPU run end to end, kill-and-resume bit-exactness, torchrun DDP, checkpoint files."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from fakes import TINY_MODEL, make_fake_wsol_metadata, tiny_recipe
from safetensors.torch import load_file

from timm_adl.train import load_config, run_training
from timm_adl.train.checkpoint import latest_resume_point, load_state

# Tiny timm model: 80 k parameters, 32 px input, a 2x2 last map; a handful of images.
TIMING_KEYS = ('img_per_s', 'epoch_seconds')


# torchrun's workers run this script (a real subprocess: torchrun launches it).
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from timm_adl.train import load_config, run_training
    result = run_training(load_config(json.loads(sys.argv[1])), progress=False)
    # The ranks share one stdout pipe and print() may split a line into several writes, so long lines
    # interleave (seen in CI). The test reads summary.json (written by rank 0); this short line, one
    # os.write below PIPE_BUF and so atomic, only says which rank saw which world size.
    os.write(1, f'RANK {os.environ["RANK"]} WORLD {result["world_size"]}\\n'.encode())
    """
)


def _run_and_maybe_kill(recipe: dict, mode: str) -> None:
    """Body of a child process: train ``recipe``; ``mode`` says where to SIGKILL itself.

    A spawned interpreter, not a fork: a fork of a pytest worker that already ran a backward pass elsewhere
    (autograd's thread pool started) cannot run backward ("Unable to handle autograd's threading in
    combination with fork-based multiprocessing"). It is killed by the kernel exactly like any process.
    """
    import timm_adl.train.checkpoint as ck
    import timm_adl.train.engine as engine

    torch.set_num_threads(1)
    kind, _, arg = mode.partition(':')
    if kind == 'kill-after':  # right after the resume point of step N is complete
        save = engine.save_resume_point

        def patched(resume_dir, step, *args, **kwargs):
            save(resume_dir, step, *args, **kwargs)
            if step == int(arg):
                os.kill(os.getpid(), signal.SIGKILL)

        engine.save_resume_point = patched
    elif kind == 'kill-during':  # half-way through writing the state file of step N
        write = ck.atomic_write_bytes

        def patched_write(path, data):
            if path.name == f'state-{int(arg):09d}.pt':
                path.with_name(f'.{path.name}.half.tmp').write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            write(path, data)

        ck.atomic_write_bytes = patched_write
    run_training(load_config(recipe), resume=kind == 'resume', progress=False)


def _start(recipe: dict, mode: str) -> mp.Process:
    proc = mp.get_context('spawn').Process(target=_run_and_maybe_kill, args=(recipe, mode))
    proc.start()
    return proc


def _join(proc: mp.Process, expect_rc: int = 0) -> None:
    proc.join(timeout=240)
    assert proc.exitcode == expect_rc, f'exit code {proc.exitcode}, expected {expect_rc}'


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=4)  # 8 images per split
    return root


def _torchrun(tmp_path: Path, recipe: dict, nproc: int) -> subprocess.Popen:
    script = tmp_path / 'child.py'
    script.write_text(CHILD)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    cmd += [str(script), json.dumps(recipe)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f'{k} differs between {a} and {b}'


def _log_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_cpu_run_writes_checkpoints_and_log(data_root, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / 'run'
    cfg = load_config(tiny_recipe(data_root, out, epochs=2, select_metric='top1_clas'))
    result = run_training(cfg, progress=False)

    for name in ('config.yaml', 'log.jsonl', 'summary.json', 'best.safetensors', 'last.safetensors'):
        assert (out / name).is_file(), name
    assert load_config(out / 'config.yaml') == cfg  # the resolved config round-trips
    rows = _log_rows(out)
    assert [r['epoch'] for r in rows] == [1, 2]
    assert result['steps'] == 4 and rows[-1]['step'] == 4  # 8 images / batch 4 * 2 epochs
    best_row = max(rows, key=lambda r: r['top1_clas'])  # first of the maxima: ties keep the earlier
    assert result['best_epoch'] == best_row['epoch']
    assert result['best']['top1_clas'] == best_row['top1_clas']
    assert result['final']['top1_clas'] == rows[-1]['top1_clas']
    assert json.loads((out / 'summary.json').read_text())['best_epoch'] == result['best_epoch']

    # The weights load through timm's own pretrained path, into a model without any timm_adl code.
    model = timm.create_model(
        'resnet10t',
        pretrained=True,
        num_classes=2,
        pretrained_cfg_overlay=dict(file=result['checkpoints']['last'], num_classes=2),
        **TINY_MODEL['model_kwargs'],
    )
    last = _weights(out / 'last.safetensors')
    for k, v in model.state_dict().items():
        assert torch.equal(v, last[k]), k

    # A second run into the same directory needs --resume; resuming a finished run trains nothing.
    with pytest.raises(ValueError, match='already holds a run'):
        run_training(cfg, progress=False)
    again = run_training(cfg, resume=True, progress=False)
    assert again['best'] == result['best'] and again['steps'] == 4
    _assert_same_weights(out / 'last.safetensors', Path(again['checkpoints']['last']))

    # A resumed run must keep the recipe; only runtime keys may change.
    changed = load_config(cfg, ['optim.lr=0.1'])
    with pytest.raises(ValueError, match=r'optim\.lr'):
        run_training(changed, resume=True, progress=False)


@pytest.mark.slow
def test_kill_and_resume_is_bit_exact(data_root, tmp_path):
    """SIGKILL mid-epoch (after a checkpoint, and half-way through writing one); resume; same weights."""
    common = dict(
        adl=dict(after=['layer2', 'layer3'], gamma=0.8),  # ADL draws from the global generator: RNG restored
        epochs=3,
        batch_size=2,  # 4 steps per epoch
        ckpt_every_steps=2,
        select_metric='top1_clas',
    )
    plain = tiny_recipe(data_root, tmp_path / 'plain', **common)
    # num_workers is a runtime key: per-item seeding makes the batches independent of it.
    killed_a = tiny_recipe(data_root, tmp_path / 'a', num_workers=1, **common)
    killed_b = tiny_recipe(data_root, tmp_path / 'b', num_workers=1, **common)
    procs = [
        _start(plain, 'plain'),
        _start(killed_a, 'kill-after:6'),  # epoch 2, after 2 of its 4 steps
        _start(killed_b, 'kill-during:10'),  # epoch 3: state 10 never lands, resume from 8
    ]
    _join(procs[0])
    for proc in procs[1:]:
        _join(proc, expect_rc=-signal.SIGKILL)
    assert not (tmp_path / 'a' / 'summary.json').exists() and not (tmp_path / 'b' / 'summary.json').exists()
    _, state_a = latest_resume_point(tmp_path / 'a' / 'resume')
    assert load_state(state_a)['step'] == 6 and load_state(state_a)['step_in_epoch'] == 2
    _, state_b = latest_resume_point(tmp_path / 'b' / 'resume')
    assert load_state(state_b)['step'] == 8  # the half-written step-10 state is ignored
    assert (tmp_path / 'b' / 'resume' / 'weights-000000010.safetensors').exists()

    resumed = [
        _start(dict(killed_a, num_workers=0), 'resume'),
        _start(dict(killed_b, num_workers=0), 'resume'),
    ]
    for proc in resumed:
        _join(proc)
    for run in ('a', 'b'):
        _assert_same_weights(tmp_path / 'plain' / 'last.safetensors', tmp_path / run / 'last.safetensors')
        _assert_same_weights(tmp_path / 'plain' / 'best.safetensors', tmp_path / run / 'best.safetensors')
        plain_rows, run_rows = _log_rows(tmp_path / 'plain'), _log_rows(tmp_path / run)
        assert run_rows == plain_rows
    assert not list((tmp_path / 'b' / 'resume').glob('*.tmp'))  # leftovers of the killed write are cleaned


@pytest.mark.slow
def test_torchrun_two_processes_matches_single(data_root, tmp_path):
    """torchrun --nproc_per_node 2 (gloo) sees the same global batches as one process.

    GroupNorm instead of BatchNorm and no ADL make the two runs compute the same thing up to float
    summation order, so the weights must agree closely and the metrics equal: the trainer's data split,
    gradient averaging and loss bookkeeping are checked, not just that DDP starts.
    """
    over = dict(
        model_kwargs=dict(TINY_MODEL['model_kwargs'], norm_layer='groupnorm1'), epochs=2, seed=3, batch_size=4
    )
    single = tiny_recipe(data_root, tmp_path / 'single', **over)
    multi = tiny_recipe(data_root, tmp_path / 'ddp', **over)
    p_multi = _torchrun(tmp_path, multi, nproc=2)
    p_single = _start(single, 'plain')  # meanwhile, the 1-process run
    out, err = p_multi.communicate(timeout=300)
    assert p_multi.returncode == 0, f'torchrun failed:\n{out}\n{err[-3000:]}'
    _join(p_single)
    assert 'RANK 0 WORLD 2' in out and 'RANK 1 WORLD 2' in out, out
    res_multi = json.loads((tmp_path / 'ddp' / 'summary.json').read_text())
    res_single = json.loads((tmp_path / 'single' / 'summary.json').read_text())
    assert res_single['world_size'] == 1 and res_multi['world_size'] == 2

    ws, wm = (
        _weights(tmp_path / 'single' / 'last.safetensors'),
        _weights(tmp_path / 'ddp' / 'last.safetensors'),
    )
    assert ws.keys() == wm.keys()
    for k in ws:
        assert torch.allclose(ws[k], wm[k], rtol=1e-4, atol=1e-5), k
    for key in ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc'):
        assert res_multi['final'][key] == pytest.approx(res_single['final'][key], abs=1e-6), key
    rows_s, rows_m = _log_rows(tmp_path / 'single'), _log_rows(tmp_path / 'ddp')
    for rs, rm in zip(rows_s, rows_m, strict=True):
        assert rm['train_loss'] == pytest.approx(rs['train_loss'], rel=1e-4)

    # Seeding: rank r's generator is seeded with seed + r (ADL would draw from it); without ADL nothing
    # consumed it, so each rank's saved state is exactly the freshly seeded one, and the two differ.
    state = load_state(latest_resume_point(tmp_path / 'ddp' / 'resume')[1])
    assert len(state['rng']) == 2
    for rank, rng in enumerate(state['rng']):
        assert torch.equal(rng['torch'], torch.Generator().manual_seed(3 + rank).get_state())
