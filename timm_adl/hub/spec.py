"""How to rebuild a model from its ``config.json``: the architecture name and the model args that go there.

Two ways, tried in order, each checked by actually rebuilding the model and comparing it with the original
(parameter names and shapes, ADL points and settings, module types, eval outputs on one input):
1. the model's own registered architecture with its args, ADL settings passed explicitly (``adl_after``,
   ``adl_drop_rate``, ``adl_gamma``: timm's export drops every arg ending in ``_drop_rate``);
2. the generic ``adl_inserted`` architecture: base architecture + base args + ``adl_points`` (+
   ``inserted_layers``: class name and kwargs of every other inserted layer), for any model
   ``timm_adl.insert`` made.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models import create_model, get_model_args, is_model, model_entrypoint
from torch import nn

__all__ = ['ModelSpec', 'describe_model']

GENERIC_ARCH = 'adl_inserted'
_ADL_ARGS = ('adl_after', 'adl_drop_rate', 'adl_gamma')


@dataclass
class ModelSpec:
    """What ``config.json`` records so that ``timm.create_model(architecture, **model_args)`` rebuilds a model."""

    architecture: str
    model_args: dict[str, Any]
    base_architecture: str  # the architecture without any ADL
    adl_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    inserted_layers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _inserted_layers(model: nn.Module) -> tuple[dict[str, dict[str, Any]], dict[str, type]]:
    """``{point: {'layer', 'kwargs'}}`` for the non-ADL layers ``insert`` placed, and the user classes among
    them (the check below rebuilds the model in this process, where they are at hand)."""
    from ..adl import ADL
    from ..layer_spec import SAFE_NAMESPACES
    from ..surgery import inserted_points

    records, user_classes = {}, {}
    for point, placed in inserted_points(model).items():
        if isinstance(placed.module, ADL):
            continue
        if placed.kwargs is None:
            raise ValueError(
                f'cannot record the {type(placed.module).__name__} inserted after {point!r}: a factory built it '
                'with arguments that are not JSON (or not known); insert it with layer=<class> and JSON kwargs'
            )
        records[point] = {'layer': placed.layer, 'kwargs': _json_copy(placed.kwargs)}
        if not placed.layer.startswith(tuple(f'{s}.' for s in SAFE_NAMESPACES)):
            user_classes[placed.layer] = type(placed.module)
    return records, user_classes


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _registered_adl_args(points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ADL settings as the paper entrypoints take them: one setting for all points when they share it.

    A point with ``per_sample`` or a component switched off (``use_drop`` / ``use_importance`` False) has no
    ``adl_*`` arg of its own, so it goes in the per-point dict form of ``adl_after``.
    """
    settings = {json.dumps(s, sort_keys=True) for s in points.values()}
    if len(settings) == 1:
        shared = next(iter(points.values()))
        if set(shared) <= {'drop_rate', 'gamma', 'per_sample'} and not shared.get('per_sample', False):
            return {
                'adl_after': list(points),
                'adl_drop_rate': shared['drop_rate'],
                'adl_gamma': shared['gamma'],
            }
    return {'adl_after': {name: dict(s) for name, s in points.items()}}


def _accepts(architecture: str, names: tuple[str, ...]) -> bool:
    params = inspect.signature(model_entrypoint(architecture)).parameters
    return all(n in params for n in names)


def _probe_input(model: nn.Module) -> torch.Tensor:
    """One fixed random image: the model's input size, or 128 px (cheaper; any size checks the same code)."""
    cfg = getattr(model, 'pretrained_cfg', {})
    size = tuple(cfg.get('input_size') or (3, 224, 224))
    if not cfg.get('fixed_input_size', False):
        side = max(128, *tuple(cfg.get('min_input_size') or (3, 0, 0))[1:])
        size = (size[0], side, side)
    gen = torch.Generator().manual_seed(0)
    return torch.randn((1, *size), generator=gen)


@torch.no_grad()
def _same_model(original: nn.Module, rebuilt: nn.Module) -> bool:
    from ..surgery import adl_points

    a, b = original.state_dict(), rebuilt.state_dict()
    if {k: tuple(v.shape) for k, v in a.items()} != {k: tuple(v.shape) for k, v in b.items()}:
        return False
    if adl_points(original) != adl_points(rebuilt):
        return False
    if _inserted_layers(original)[0] != _inserted_layers(rebuilt)[0]:
        return False
    types = sorted((n, type(m).__name__) for n, m in original.named_modules())
    if types != sorted((n, type(m).__name__) for n, m in rebuilt.named_modules()):
        return False
    # Same parameters, same code path: eval outputs on one input (catches strides, pooling, activations).
    # Same device and dtype as the original, so both run the same kernels (no CPU/GPU or TF32 differences).
    param = next(original.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device('cpu'), torch.float32)
    rebuilt.to(device=device, dtype=dtype).load_state_dict(a)
    was_training = original.training
    x = _probe_input(original).to(device, dtype)
    try:
        original.eval()
        rebuilt.eval()
        out_a, out_b = original(x), rebuilt(x)
    finally:
        original.train(was_training)
    if (
        not (isinstance(out_a, torch.Tensor) and isinstance(out_b, torch.Tensor))
        or out_a.shape != out_b.shape
    ):
        return False
    return torch.allclose(out_a.float(), out_b.float(), rtol=1e-3, atol=1e-4)


def describe_model(model: nn.Module) -> ModelSpec:
    """The architecture and model args that rebuild ``model``, checked by rebuilding it.

    Raises ``ValueError`` for a model timm cannot rebuild (not made by ``timm.create_model``, optionally
    followed by ``timm_adl.insert``, or changed by hand afterwards).
    """
    from ..models import BASELINES
    from ..surgery import adl_points

    cfg = getattr(model, 'pretrained_cfg', None) or {}
    arch = cfg.get('architecture')
    if not arch or not is_model(arch):
        raise ValueError(
            f'cannot record how to rebuild this {type(model).__name__}: its pretrained_cfg names no registered '
            f'timm architecture (got {arch!r}); save a model made by timm.create_model (and timm_adl.insert)'
        )
    args = get_model_args(model)
    args.pop('layers', None)  # classes handed to adl_inserted at load time, never recorded
    points = _json_copy(adl_points(model))
    inserted, user_classes = _inserted_layers(model)

    if arch == GENERIC_ARCH:
        base = str(args.pop('base_architecture', ''))
        args.pop('adl_points', None)
        args.pop('inserted_layers', None)
    else:
        base = BASELINES.get(arch, arch)
    candidates: list[tuple[str, dict[str, Any]]] = []
    if arch != GENERIC_ARCH and not inserted:
        own = dict(args)
        if points and _accepts(arch, _ADL_ARGS):
            own = {k: v for k, v in own.items() if k not in _ADL_ARGS}
            own.update(_registered_adl_args(points))
        candidates.append((arch, own))
    if points or inserted:
        base_args = {k: v for k, v in args.items() if not k.startswith('adl_')}
        generic = {**base_args, 'base_architecture': base, 'adl_points': points}
        if inserted:
            generic['inserted_layers'] = inserted
        candidates.append((GENERIC_ARCH, generic))

    failures = []
    for candidate, candidate_args in candidates:
        candidate_args = _json_copy(candidate_args)  # exactly what config.json will give back
        try:
            extra = {'layers': user_classes} if user_classes and candidate == GENERIC_ARCH else {}
            rebuilt = create_model(candidate, pretrained=False, **candidate_args, **extra)
        except Exception as err:  # a candidate that cannot even be built is simply not the answer
            failures.append(f'{candidate}: {type(err).__name__}: {err}')
            continue
        if _same_model(model, rebuilt):
            return ModelSpec(candidate, candidate_args, base, points, inserted)
        failures.append(f'{candidate}{candidate_args}: rebuilds a different model')
    raise ValueError(
        f'cannot record how to rebuild this {arch!r} model from config.json: '
        + '; '.join(failures)
        + ' (was it changed after timm.create_model / timm_adl.insert?)'
    )
