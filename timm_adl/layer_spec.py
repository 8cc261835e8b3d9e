"""How an inserted layer is recorded (class name + constructor kwargs) and rebuilt from that record safely.

A ``config.json`` may come from anyone, so rebuilding never imports a module it names: a class is found
only as an attribute of ``torch.nn``, ``timm.layers`` or ``timm_adl`` (already imported), or in the
``layers`` mapping the caller passes in. Anything else is refused with a line saying how to pass it.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import timm.layers
import torch
from torch import nn

__all__ = ['SAFE_NAMESPACES', 'capture_init', 'layer_name', 'resolve_layer']

SAFE_NAMESPACES = ('torch.nn', 'timm.layers', 'timm_adl')


def _namespace(name: str) -> Any:
    if name == 'timm_adl':
        import timm_adl  # already imported: this module is part of it

        return timm_adl
    return {'torch.nn': torch.nn, 'timm.layers': timm.layers}[name]


def layer_name(cls: type) -> str:
    """``'torch.nn.Dropout2d'`` / ``'timm.layers.SEModule'`` / ``'timm_adl.ADL'`` when the class is that
    public attribute, else its bare name (a user class, rebuilt only from a ``layers`` mapping)."""
    for space in SAFE_NAMESPACES:
        if getattr(_namespace(space), cls.__name__, None) is cls:
            return f'{space}.{cls.__name__}'
    return cls.__name__


def resolve_layer(name: str, layers: Mapping[str, type] | None = None) -> type:
    """The class a recorded layer name means: from ``layers`` first, else an attribute of a safe namespace."""
    layers = dict(layers or {})
    if name in layers:
        cls = layers[name]
    else:
        space, _, attr = name.rpartition('.')
        cls = getattr(_namespace(space), attr, None) if space in SAFE_NAMESPACES and attr else None
        if cls is None:
            bare = name.rpartition('.')[2] or name
            close = difflib.get_close_matches(name, list(layers), n=3)
            hint = f' (given: {", ".join(close)})' if close else ''
            raise ValueError(
                f'inserted layer class {name!r} is not in {", ".join(SAFE_NAMESPACES)}{hint}; a saved config never '
                f'makes timm_adl import a module it names, so pass the class yourself: '
                f"timm_adl.load(..., layers={{'{name}': {bare}}}) or timm.create_model(..., layers={{'{name}': {bare}}})"
            )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f'inserted layer {name!r} resolves to {cls!r}, which is not an nn.Module class')
    return cls


@contextlib.contextmanager
def _recording_inits(records: dict[int, tuple[nn.Module, dict[str, Any]]]) -> Iterator[None]:
    """Record, for each module built meanwhile, the arguments of its first ``__init__`` (the most derived
    class's, which ``type.__call__`` runs first): read from the frame, so no class is patched."""
    previous = sys.getprofile()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == 'call' and frame.f_code.co_name == '__init__':
            this = frame.f_locals.get('self')
            if isinstance(this, nn.Module) and id(this) not in records:
                records[id(this)] = (this, dict(frame.f_locals))

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


def capture_init(factory: Callable[[], nn.Module]) -> tuple[Any, dict[str, Any] | None]:
    """Call ``factory`` and return its result with the keyword arguments its class was built with.

    A factory (``lambda p: SEModule(p.channels)``) hides its arguments; the Hub round trip needs them to
    rebuild the layer, so the module's ``__init__`` arguments are read while it runs. Arguments left at
    their default are dropped. The kwargs are None when they cannot be recorded as JSON (a class argument
    such as ``act_layer=nn.GELU``, ``*args``).
    """
    records: dict[int, tuple[nn.Module, dict[str, Any]]] = {}
    with _recording_inits(records):
        module = factory()
    record = records.get(id(module))
    if record is None or record[0] is not module:
        return module, None
    return module, init_kwargs(type(module), record[1])


def init_kwargs(cls: type, local_vars: dict[str, Any]) -> dict[str, Any] | None:
    """The non-default ``__init__`` arguments among ``local_vars``, JSON-safe, or None."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    kwargs: dict[str, Any] = {}
    for p in params:
        value = local_vars.get(p.name)
        if p.kind == p.VAR_POSITIONAL:
            if value:
                return None
        elif p.kind == p.VAR_KEYWORD:
            kwargs.update(value or {})
        elif p.default is inspect.Parameter.empty or (value is not p.default and value != p.default):
            kwargs[p.name] = value
    return kwargs if _json_safe(kwargs) else None


def _json_safe(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False
