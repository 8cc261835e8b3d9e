"""Many trainings in one process: no run inherits state from the one before (a study's use).

Two different tiny recipes run one after another in ONE interpreter must save the weights that each saves
when it runs alone in a fresh interpreter, bit for bit; and A, B, A in one interpreter gives A's weights
twice. A run that left a generator advanced, a seed-order dependence, a cached object or a held lock
behind would show here as different weights (or an error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fakes import TINY_MODEL, make_fake_wsol_metadata, tiny_recipe
from safetensors.torch import load_file

from timm_adl.train import load_config
from timm_adl.train.checkpoint import latest_resume_point, load_state
from timm_adl.train.optim import momentum_at

# The child: trains each recipe of argv[1] in turn, in this one process; reports whether run_training left
# the caller's generators where it found them.
CHILD = textwrap.dedent(
    """
    import json, random, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from timm_adl.train import load_config, run_training

    untouched = []
    for recipe in json.loads(sys.argv[1]):
        before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        run_training(load_config(recipe), progress=False)
        after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
        untouched.append(
            bool(torch.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2])
        )
    print('UNTOUCHED ' + json.dumps(untouched))
    """
)


def _start(script: Path, recipes: list[dict]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, str(script), json.dumps(recipes)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f'child failed:\n{out}\n{err[-3000:]}'
    return out


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f'{k} differs between {a} and {b}'


@pytest.mark.slow
def test_runs_in_one_process_match_separate_processes(tmp_path):
    data = tmp_path / 'data'
    make_fake_wsol_metadata(data, n_classes=2, per_class=2)  # 4 images per split: 2 steps
    small = dict(batch_size=2, epochs=1)

    def recipe_a(out: str) -> dict:
        return tiny_recipe(data, tmp_path / out, **small)

    def recipe_b(out: str) -> dict:  # another model, seed, schedule and ADL: a different run in every way
        return tiny_recipe(
            data, tmp_path / out, **small, seed=5, adl=dict(after=['layer3'], drop_rate=0.5),
            model_kwargs=dict(TINY_MODEL['model_kwargs'], stem_width=16),
            sched=dict(name='onecycle', cycle_momentum=True), optim=dict(lr=0.02), aug=dict(hflip=False),
        )  # fmt: skip

    script = tmp_path / 'child.py'
    script.write_text(CHILD)
    shared = _start(script, [recipe_a('a1'), recipe_b('b1'), recipe_a('a2')])
    alone_a = _start(script, [recipe_a('a')])
    alone_b = _start(script, [recipe_b('b')])
    out = _finish(shared)
    _finish(alone_a), _finish(alone_b)

    for name in ('best.safetensors', 'last.safetensors'):
        _assert_same(tmp_path / 'a' / name, tmp_path / 'a1' / name)
        _assert_same(tmp_path / 'b' / name, tmp_path / 'b1' / name)
        _assert_same(tmp_path / 'a' / name, tmp_path / 'a2' / name)  # A after B is still A
    wa, wb = (
        load_file(str(tmp_path / 'a' / 'last.safetensors')),
        load_file(str(tmp_path / 'b' / 'last.safetensors')),
    )
    assert any(k not in wb or wa[k].shape != wb[k].shape or not torch.equal(wa[k], wb[k]) for k in wa)
    assert 'UNTOUCHED [true, true, true]' in out, out  # run_training gives the caller its generators back

    # B cycles momentum (its last step used the schedule's value), A keeps optim.momentum.
    def last_momenta(out: str) -> set[float]:
        state = load_state(latest_resume_point(tmp_path / out / 'resume')[1])
        return {g['momentum'] for g in state['optimizer']['param_groups']}

    sched_b = load_config(recipe_b('unused')).sched
    assert last_momenta('b') == {momentum_at(sched_b, 1, 2)} and momentum_at(sched_b, 1, 2) != 0.9
    assert last_momenta('a') == {0.9}
