"""Optimizer with a backbone and a head rate, and a per-step learning-rate schedule.

Which parameters are "head" (trained at ``lr * lr_head_mult``):

1. the classifier, named by the model's ``pretrained_cfg['classifier']`` (timm's own record of which layer
   is dropped when the class count changes);
2. every parameter the starting weights did not supply (the layers a fine-tune adds: e.g. the conv6 of a
   VGG16-GAP when starting from an ``initial_checkpoint`` of plain VGG16);
3. every parameter matching a recipe pattern in ``optim.head`` (fnmatch on the name, or a module prefix
   such as ``layer4``: the references disagree on what else is "new", so the recipe says it).

Everything else is "backbone" at ``lr * lr_backbone_mult``. The schedule (rate, and with
``sched.cycle_momentum`` the momentum) is a pure function of the step, so resuming needs only the step count.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Iterable

import torch
from torch import nn

from .config import ConfigError, OptimConfig, SchedConfig

__all__ = ['build_optimizer', 'head_param_names', 'lr_factor', 'momentum_at', 'set_lr', 'set_momentum']


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name == pattern or name.startswith(pattern.rstrip('.') + '.')


def head_param_names(
    model: nn.Module, patterns: Iterable[str] = (), new_params: Iterable[str] = ()
) -> set[str]:
    """Names of the parameters trained at the head rate (see the module docstring).

    A recipe pattern that matches no parameter is an error: a typo would otherwise silently train the
    layer at the backbone rate.
    """
    pretrained_cfg = getattr(model, 'pretrained_cfg', None) or {}
    classifier = pretrained_cfg.get('classifier') or ()
    if isinstance(classifier, str):
        classifier = (classifier,)
    names = set(new_params)
    params = [name for name, _ in model.named_parameters()]
    for pattern in classifier:
        names.update(n for n in params if _matches(n, pattern))
    for pattern in patterns:
        hits = [n for n in params if _matches(n, pattern)]
        if not hits:
            modules = sorted({n.rsplit('.', 1)[0] for n in params} | {n.split('.', 1)[0] for n in params})
            close = difflib.get_close_matches(pattern, modules, n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise ConfigError(f'optim.head pattern {pattern!r} matches no parameter of the model{hint}')
        names.update(hits)
    return names


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, head_names: set[str]
) -> tuple[torch.optim.Optimizer, list[float]]:
    """SGD over the backbone and head groups; returns the optimizer and each group's peak rate.

    With ``decay_norm_bias=False`` the 1-d parameters (biases, norm scales and shifts) of each group go to a
    twin group without weight decay, as junsukchoe/ADL's ``regularize_cost('.*/W', ...)`` decays kernels only.
    """
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decay = cfg.decay_norm_bias or param.ndim > 1
            buckets.setdefault((name in head_names, decay), []).append(param)
    groups, peaks = [], []
    for (is_head, decay), params in sorted(buckets.items()):
        peak = cfg.lr * (cfg.lr_head_mult if is_head else cfg.lr_backbone_mult)
        groups.append({'params': params, 'lr': peak, 'weight_decay': cfg.weight_decay if decay else 0.0})
        peaks.append(peak)
    optimizer = torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    return optimizer, peaks


def _onecycle_phase(cfg: SchedConfig, step: int, total_steps: int) -> tuple[bool, float]:
    """(rising, t): whether ``step`` is in onecycle's first phase, and how far through its phase (0..1).

    The rate peaks at step ``peak = round(pct_start * total_steps)`` and would reach its floor at step
    ``total_steps`` (never taken). torch's OneCycleLR peaks one step earlier (``pct_start * total_steps - 1``)
    and ends on the last step taken (``total_steps - 1``); this schedule is torch's stepped over
    ``total_steps + 1`` steps with ``pct_start = (peak + 1) / (total_steps + 1)``.
    """
    up = max(1, round(cfg.pct_start * total_steps))
    if step < up:
        return True, step / up
    return False, min((step - up) / max(1, total_steps - up), 1.0)


def lr_factor(cfg: SchedConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the peak rate at ``step`` (0-based, the step about to be taken)."""
    epoch = step / steps_per_epoch  # fractional epoch
    if cfg.name == 'onecycle':
        # Cosine rise from peak/25 to peak over pct_start, cosine fall to the floor (timm/torch OneCycle shape).
        rising, t = _onecycle_phase(cfg, step, total_steps)
        low = 1.0 / 25.0
        if rising:
            return low + (1.0 - low) * 0.5 * (1.0 - math.cos(math.pi * t))
        floor = cfg.min_lr_mult
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    warm = 1.0
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        warm = (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == 'step':
        # Milestones count whole epochs, as the references' schedules do.
        whole = step // steps_per_epoch
        return warm * cfg.gamma ** sum(1 for m in cfg.milestones if whole >= m)
    if cfg.name == 'cosine':
        t = min(step / max(1, total_steps), 1.0)
        return warm * (cfg.min_lr_mult + (1.0 - cfg.min_lr_mult) * 0.5 * (1.0 + math.cos(math.pi * t)))
    return warm  # constant


def set_lr(optimizer: torch.optim.Optimizer, peaks: list[float], factor: float) -> None:
    for group, peak in zip(optimizer.param_groups, peaks, strict=True):
        group['lr'] = peak * factor


def momentum_at(cfg: SchedConfig, step: int, total_steps: int) -> float:
    """SGD momentum at ``step`` under ``sched.cycle_momentum``: the mirror image of onecycle's rate.

    Cosine from ``max_momentum`` down to ``base_momentum`` while the rate rises, and back up while it falls
    (the shape of torch's OneCycleLR with ``cycle_momentum=True``, on this module's step convention: see
    ``_onecycle_phase``). Lower momentum at high rates keeps the effective step size in check.
    """
    rising, t = _onecycle_phase(cfg, step, total_steps)
    start, end = (cfg.max_momentum, cfg.base_momentum) if rising else (cfg.base_momentum, cfg.max_momentum)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    for group in optimizer.param_groups:
        group['momentum'] = momentum
