"""sched.cycle_momentum: onecycle's momentum, against a hand computation and torch's OneCycleLR."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from timm_adl.train import ConfigError, load_config
from timm_adl.train.config import SchedConfig
from timm_adl.train.optim import lr_factor, momentum_at

RECIPE = dict(model='resnet18', data=dict(root='x'))


def _sched(**over) -> SchedConfig:
    return SchedConfig(name='onecycle', cycle_momentum=True, **over)


def test_momentum_by_hand():
    # 11 steps, pct_start 0.3: the rate peaks at step round(3.3) = 3, then falls over 8 steps.
    cfg = _sched(pct_start=0.3)
    expect = {
        0: 0.95,  # max at the start
        1: 0.85 + 0.05 * (1 + math.cos(math.pi / 3)),  # a third of the way down: 0.925
        3: 0.85,  # base at the rate's peak
        7: 0.90,  # half-way back up
        11: 0.95,  # max again at the (never taken) step total_steps
    }
    for step, value in expect.items():
        assert momentum_at(cfg, step, 11) == pytest.approx(value, abs=1e-12), step
    # The mirror image of the rate: lowest momentum exactly where the rate is highest.
    rates = [lr_factor(cfg, s, 11, 11) for s in range(11)]
    moms = [momentum_at(cfg, s, 11) for s in range(11)]
    assert rates.index(max(rates)) == moms.index(min(moms)) == 3


def _torch_momenta(total: int, pct_start: float, base: float, top: float) -> list[float]:
    """Momentum torch's OneCycleLR gives SGD before each of ``total`` steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=total, pct_start=pct_start, anneal_strategy='cos',
        cycle_momentum=True, base_momentum=base, max_momentum=top, three_phase=False,
    )  # fmt: skip
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]['momentum'])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize('total,pct_start', [(20, 0.3), (37, 0.25), (100, 0.5)])
def test_momentum_matches_torch_one_cycle(total, pct_start):
    """Off by one step, documented: torch peaks at step ``pct_start * total - 1`` and ends on the last step,
    this schedule (like its rate) peaks at ``round(pct_start * total)`` and ends at step ``total``. So it is
    exactly torch's schedule stepped over ``total + 1`` steps with ``pct_start = (peak + 1) / (total + 1)``;
    and with torch's own total and pct_start it is at most one step's change away."""
    base, top = 0.8, 0.97
    cfg = _sched(pct_start=pct_start, base_momentum=base, max_momentum=top)
    ours = [momentum_at(cfg, s, total) for s in range(total)]
    peak = round(pct_start * total)
    shifted = _torch_momenta(total + 1, (peak + 1) / (total + 1), base, top)[:total]
    assert max(abs(a - b) for a, b in zip(ours, shifted, strict=True)) < 1e-9
    same = _torch_momenta(total, pct_start, base, top)
    step_change = max(abs(a - b) for a, b in itertools.pairwise(same))
    assert max(abs(a - b) for a, b in zip(ours, same, strict=True)) <= step_change + 1e-12
    assert ours[0] == same[0] == top and min(ours) == pytest.approx(base, abs=1e-12)


@pytest.mark.parametrize(
    'overrides,message',
    [
        (['sched.cycle_momentum=true'], "'sched.cycle_momentum' needs sched.name onecycle, got 'step'"),
        (['sched.name=onecycle', 'sched.base_momentum=0.96'], 'must satisfy 0 <= base <= max < 1'),
        (['sched.name=onecycle', 'sched.max_momentum=1.0'], 'got base 0.85 and max 1.0'),
        (['sched.base_momentum=-0.1'], 'got base -0.1 and max 0.95'),
    ],
)
def test_momentum_keys_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=r'^config key') as err:
        load_config(RECIPE, overrides)
    assert message in str(err.value) and '\n' not in str(err.value)


def test_default_leaves_momentum_alone():
    cfg = load_config(RECIPE, ['sched.name=onecycle'])
    assert cfg.sched.cycle_momentum is False
    assert load_config(RECIPE, ['sched.name=onecycle', 'sched.cycle_momentum=true']).sched.cycle_momentum
