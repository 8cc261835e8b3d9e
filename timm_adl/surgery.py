"""``insert``: put ADL layers into a timm model at named points, keeping it a timm model.

Every point is resolved on a torch.fx trace of the model (see ``points``), then applied to a deep copy
with the least invasive edit that keeps every parameter and buffer under its original key, in order:

1. the module's parent is a chain container (``nn.Sequential``, or a module whose forward iterates its
   children): splice the ADL into the parent's ``_modules`` right after it, as ``<name>_adl``;
2. the module is itself a chain container: append the ADL to it as ``adl``;
3. the module is stateless (pooling, activation): replace it with ``Sequential(module, ADL)``;
4. the module's forward returns one of its own children's output: apply these rules to that child
   (``layer3.0`` under a non-chain parent ends with ``act3``, which becomes ``Sequential(act3, ADL)``);
5. otherwise (a stateful module such as a root-level ``BatchNorm2d`` or an Inception block): switch the
   instance to a cached subclass of its class whose forward applies its new ``adl`` child to the output.

Functional points (``Mixed_6a.max_pool2d``, a residual ``add``) have no module to edit: only the smallest
enclosing module is re-traced, with its children as leaves, the ADL node added there and a
``GraphModule`` put back in its place (same children and tensors, so the same keys). The root model is
never replaced, so the object stays the same timm class with all its attributes and methods.

Each ADL carries its point name (``adl.adl_point``) so ``adl_points`` can say where they are.
"""

from __future__ import annotations

import copy
import difflib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from timm.layers import is_notrace_module, register_notrace_module
from torch import fx, nn

from ._fx import TraceFailure, children_are_chain, graph_module, insert_after, trace, trace_locally
from .adl import ADL
from .points import ModelPoints, _parent, analyse

__all__ = ['adl_points', 'insert']

_ADL_KWARGS = ('drop_rate', 'gamma', 'per_sample')


def insert(
    model: nn.Module,
    after: Sequence[str] | Mapping[str, Mapping[str, Any]] | str,
    drop_rate: float = 0.75,
    gamma: float = 0.9,
    per_sample: bool = False,
) -> nn.Module:
    """Return a copy of ``model`` with an ``ADL`` after each point named in ``after``.

    ``after``: names (module paths, dotted FX node names, shell patterns such as ``'stages.*'``, aliases
    ``'pool1'``..``'poolN'`` and ``'last'``), or a dict name -> per-point ADL kwargs overriding the
    defaults (``{'pool4': dict(gamma=0.8), 'last': {}}``). The copy keeps the class, every attribute and
    method and the ``state_dict`` keys (in order) of ``model``; ``model`` itself is not modified.
    """
    requests = _requests(after, dict(drop_rate=drop_rate, gamma=gamma, per_sample=per_sample))
    new = copy.deepcopy(model)
    try:
        points = analyse(new)
    except TraceFailure as err:
        return _insert_untraced(new, requests, err)
    resolved: dict[tuple[str, str], dict[str, Any]] = {}
    for name, kwargs in requests:
        for kind, canonical in points.resolve(name):
            points.check_spatial(kind, canonical)
            previous = resolved.setdefault((kind, canonical), kwargs)
            if previous != kwargs:
                raise ValueError(f'{canonical!r} is named twice in `after` with different ADL settings')
    node_points: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for (kind, name), kwargs in resolved.items():
        if kind == 'module':
            _after_module(new, name, _make_adl(name, kwargs, new))
        else:
            node = points.by_qualname[name]
            owner = _parent(node.target) if node.op == 'call_module' else points.owner[node]
            node_points.setdefault(owner, []).append((name, kwargs))
    for owner, items in node_points.items():
        _after_nodes(new, owner, items, points)
    return new


def adl_points(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{point: {'drop_rate', 'gamma', 'per_sample'}}`` for every ADL placed by ``insert``.

    ``insert(base_model, after=adl_points(model))`` rebuilds ``model`` from its base; the dict is
    JSON-serialisable, so it can travel in a config file.
    """
    found: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        if not isinstance(module, ADL):
            continue
        point = getattr(module, 'adl_point', None)
        if not isinstance(point, str):
            raise ValueError(
                f'the ADL at {path!r} was not placed by timm_adl.insert, so its point is unknown'
            )
        found[point] = {'drop_rate': module.drop_rate, 'gamma': module.gamma, 'per_sample': module.per_sample}
    return found


# -- requests -----------------------------------------------------------------------------------------
def _requests(after: Any, defaults: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(after, str):
        after = [after]
    if isinstance(after, Mapping):
        items = []
        for name, kwargs in after.items():
            kwargs = dict(kwargs or {})
            unknown = sorted(set(kwargs) - set(_ADL_KWARGS))
            if unknown:
                raise ValueError(
                    f'unknown ADL settings {unknown} for point {name!r}; expected some of {_ADL_KWARGS}'
                )
            items.append((name, {**defaults, **kwargs}))
    elif isinstance(after, Sequence) and all(isinstance(a, str) for a in after):
        items = [(name, dict(defaults)) for name in after]
    else:
        raise ValueError(f'`after` must be a list of point names or a dict name -> ADL kwargs, got {after!r}')
    if not items:
        raise ValueError('`after` names no insertion point')
    for _, kwargs in items:
        ADL(**kwargs)  # validate early, with ADL's own error messages
    return items


def _make_adl(point: str, kwargs: dict[str, Any], root: nn.Module) -> ADL:
    adl = ADL(**kwargs)
    adl.adl_point = point
    adl.train(root.training)
    return adl


# -- module points ------------------------------------------------------------------------------------
def _stateless(module: nn.Module) -> bool:
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None


def _splice_after(parent: nn.Module, name: str, new_name: str, adl: nn.Module) -> None:
    if new_name in parent._modules:
        raise ValueError(f'there is already an ADL after {name!r} ({new_name!r})')
    items = list(parent._modules.items())
    index = [k for k, _ in items].index(name)
    items.insert(index + 1, (new_name, adl))
    parent._modules.clear()
    parent._modules.update(items)


def _after_module(root: nn.Module, path: str, adl: ADL) -> None:
    parent_path, _, name = path.rpartition('.')
    parent = root.get_submodule(parent_path)
    module = parent._modules[name]
    adl.train(module.training)
    if children_are_chain(parent):
        _splice_after(parent, name, f'{name}_adl', adl)
    elif children_are_chain(module):
        _splice_after(module, list(module._modules)[-1], 'adl', adl)
    elif _stateless(module):
        parent._modules[name] = nn.Sequential(OrderedDict([('0', module), ('adl', adl)]))
    elif not _descend(root, path, module, adl):
        _subclass_with_adl(module, adl)


def _descend(root: nn.Module, path: str, module: nn.Module, adl: ADL) -> bool:
    """If ``module``'s forward returns a child's output unchanged (in train and eval mode alike), place the
    ADL after that child instead: the edit stays inside a smaller, usually stateless, module."""
    targets = set()
    was_training = module.training
    try:
        for mode in (True, False):
            module.train(mode)
            graph, _ = trace(module, list(module._modules))
            out = next(n for n in graph.nodes if n.op == 'output').args[0]
            if not isinstance(out, fx.Node) or out.op != 'call_module' or len(out.users) != 1:
                return False
            calls = [n for n in graph.nodes if n.op == 'call_module' and n.target == out.target]
            if len(calls) != 1 or out.target not in module._modules:
                return False
            targets.add(out.target)
    except TraceFailure:
        return False
    finally:
        module.train(was_training)
    if len(targets) != 1:
        return False
    _after_module(root, f'{path}.{targets.pop()}', adl)
    return True


def _subclass_with_adl(module: nn.Module, adl: ADL) -> None:
    """Last resort for a module with state whose parent cannot take a sibling and whose forward does not end
    in a child: switch the instance to a subclass whose forward applies its ``adl`` child to the output.
    Keys, attributes and class ancestry stay."""
    if 'adl' in module._modules or hasattr(module, 'adl'):
        raise ValueError(f'{type(module).__name__} already has an attribute or child named "adl"')
    module.add_module('adl', adl)
    module.__class__ = with_adl_class(type(module))


_WITH_ADL_CLASSES: dict[type, type] = {}


def with_adl_class(base: type) -> type:
    """The (cached) subclass of ``base`` whose forward is ``self.adl(base.forward(self, ...))``.

    It reports ``base``'s module so torch.fx's default leaf rule treats it as ``base`` was treated, and
    pickles as (``base``, state), so no generated class has to be importable.
    """
    if '_timm_adl_base' in vars(base):
        return base
    if base not in _WITH_ADL_CLASSES:

        def forward(self, *args, **kwargs):
            return self.adl(base.forward(self, *args, **kwargs))

        def __reduce_ex__(self, protocol):
            return (_rebuild_with_adl, (base, self.__dict__))

        namespace = {'forward': forward, '__reduce_ex__': __reduce_ex__, '_timm_adl_base': base}
        namespace.update(__module__=base.__module__, __qualname__=f'{base.__qualname__}WithADL')
        cls = type(f'{base.__name__}WithADL', (base,), namespace)
        if is_notrace_module(base):
            register_notrace_module(cls)  # stays a leaf for timm's FX helpers, as its base was
        _WITH_ADL_CLASSES[base] = cls
    return _WITH_ADL_CLASSES[base]


def _rebuild_with_adl(base: type, state: dict[str, Any]) -> nn.Module:
    module = object.__new__(with_adl_class(base))
    module.__setstate__(state)
    return module


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition('.')
    root.get_submodule(parent_path)._modules[name] = new


# -- node points ----------------------------------------------------------------------------------------
def _after_nodes(
    root: nn.Module, owner: str, items: list[tuple[str, dict[str, Any]]], points: ModelPoints
) -> None:
    """Functional nodes (or repeated module calls) inside ``owner``: one local re-trace for all of them."""
    names = ', '.join(repr(name) for name, _ in items)
    if not owner:
        raise ValueError(
            f'cannot insert ADL after {names}: functional ops in the forward of {type(root).__name__} itself '
            f'would need the whole model re-traced, which would lose its timm methods; name the module '
            f'that produces or consumes it instead'
        )
    module = root.get_submodule(owner)
    try:
        graph, tracer = trace_locally(module)
    except TraceFailure as err:
        raise ValueError(f'cannot insert ADL after {names}: {err}') from err
    local = {q: n for n, q in tracer.node_to_qualname.items()}
    extra = {}
    for name, kwargs in items:
        node = local.get(name[len(owner) + 1 :])
        if node is None:
            raise ValueError(f'cannot find {name!r} when re-tracing {owner!r} ({type(module).__name__})')
        adl_name = f'{node.name}_adl'
        extra[adl_name] = _make_adl(name, kwargs, module)
        insert_after(graph, node, adl_name)
    _replace(root, owner, graph_module(module, graph, extra))


# -- models FX cannot trace ------------------------------------------------------------------------------
def _insert_untraced(
    model: nn.Module, requests: list[tuple[str, dict[str, Any]]], err: TraceFailure
) -> nn.Module:
    """Module-path surgery only: no shapes, so no aliases, node names or patterns."""
    modules = dict(model.named_modules())
    for name, kwargs in requests:
        if name not in modules or not name:
            close = ', '.join(_close(name, [p for p in modules if p]))
            raise ValueError(
                f'{err}. Without a trace only module paths can be used (module-path surgery); {name!r} is not '
                f'a module path of {type(model).__name__} (closest: {close})'
            ) from err
        _after_module(model, name, _make_adl(name, kwargs, model))
    return model


def _close(name: str, vocabulary: list[str]) -> list[str]:
    return difflib.get_close_matches(name, vocabulary, n=6, cutoff=0.5)
