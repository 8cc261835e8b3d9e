"""``insert``: put ADL (or any layer) into a timm model at named points, keeping it a timm model;
``remove``: take them out again.

Every point is resolved on a torch.fx trace of the model (see ``points``), then applied to a deep copy
with the least invasive edit that keeps every parameter and buffer under its original key, in order:

1. the module's parent is a chain container (``nn.Sequential``, or a module whose forward iterates its
   children): splice the ADL into the parent's ``_modules`` right after it, as ``<name>_adl``. A
   ``Sequential`` whose children the model calls one by one with extra arguments, never the whole
   (NaFlexViT's ``blk(x, attn_mask=...)``), is no chain: the trace says so;
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

Each inserted module carries its point name (``inserted_point``; ADL also ``adl_point``) and, when known,
its constructor kwargs, so ``adl_points`` / ``inserted_points`` can say what sits where and ``remove``
can undo each edit (a replaced module is kept by the ``GraphModule`` or wrapper that replaced it).
ADL takes the name ``adl`` (``<name>_adl``, ``.adl``), any other layer ``inserted``.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from timm.layers import is_notrace_module, register_notrace_module
from torch import fx, nn

from ._fx import TraceFailure, children_are_chain, graph_module, insert_after, trace, trace_locally
from .adl import ADL, LAYOUTS
from .layer_spec import capture_init, layer_name
from .points import InsertionPoint, _parent, analyse

__all__ = ['InsertedLayer', 'adl_points', 'insert', 'inserted_points', 'remove']

_ADL_KWARGS = ('drop_rate', 'gamma', 'per_sample', 'use_drop', 'use_importance')
_ADL_DEFAULTS = {
    'drop_rate': 0.75,
    'gamma': 0.9,
    'per_sample': False,
    'use_drop': True,
    'use_importance': True,
}
# Recorded only when switched off, so the points of every model (and config.json) saved before the modes
# existed stay exactly as they were.
_ADL_MODES = ('use_drop', 'use_importance')
LayerSpec = type | Callable[..., nn.Module] | None


@dataclass(frozen=True)
class InsertedLayer:
    """What ``insert`` put at one point: where it sits, its class name as recorded for a config file
    (``'torch.nn.Dropout2d'``, ``'timm.layers.SEModule'``, ``'timm_adl.ADL'``, or a user class's bare name)
    and its constructor kwargs (None when a factory's could not be recorded as JSON)."""

    path: str
    layer: str
    kwargs: dict[str, Any] | None
    module: nn.Module


@dataclass(frozen=True)
class _Request:
    """One point to fill: the layer (None for ADL) and its kwargs."""

    layer: LayerSpec
    kwargs: dict[str, Any]


def insert(
    model: nn.Module,
    after: Sequence[str] | Mapping[str, Mapping[str, Any]] | str,
    drop_rate: float = 0.75,
    gamma: float = 0.9,
    per_sample: bool = False,
    layer: LayerSpec = None,
    use_drop: bool = True,
    use_importance: bool = True,
    **layer_kwargs: Any,
) -> nn.Module:
    """Return a copy of ``model`` with a layer after each point named in ``after``: ADL by default.

    ``after``: names (module paths, dotted FX node names, shell patterns such as ``'stages.*'``, aliases
    ``'pool1'``..``'poolN'`` and ``'last'``), or a dict name -> per-point kwargs overriding the defaults
    (``{'pool4': dict(gamma=0.8), 'last': {}}``). ``layer``: None for ADL (``drop_rate``, ``gamma``,
    ``per_sample``, ``use_drop``, ``use_importance``; its layout and prefix tokens follow the point), an
    ``nn.Module`` class built with ``layer_kwargs``, or a factory called once per point as
    ``layer(point, **layer_kwargs)`` with that point's ``InsertionPoint`` (name, shape, channels, stride,
    layout) and returning the module. The copy keeps the class, every attribute and method and the
    ``state_dict`` keys (in order) of ``model``; the inserted modules' own parameters and buffers get new keys
    under their inserted name. ``model`` itself is not modified.
    """
    adl_settings = dict(
        drop_rate=drop_rate,
        gamma=gamma,
        per_sample=per_sample,
        use_drop=use_drop,
        use_importance=use_importance,
    )
    _check_layer(layer, layer_kwargs, adl_settings)
    requests = _requests(after, adl_settings if layer is None else layer_kwargs, layer)
    new = copy.deepcopy(model)
    try:
        points = analyse(new)
    except TraceFailure as err:
        return _insert_untraced(new, requests, err)
    resolved: dict[tuple[str, str], _Request] = {}
    for name, request in requests:
        for kind, canonical in points.resolve(name):
            points.check_spatial(kind, canonical, adl=request.layer is None)
            previous = resolved.setdefault((kind, canonical), request)
            if previous != request:
                what = 'ADL settings' if request.layer is None else 'layer settings'
                raise ValueError(f'{canonical!r} is named twice in `after` with different {what}')
    node_points: dict[str, list[tuple[str, nn.Module]]] = {}
    for (kind, name), request in resolved.items():
        made = _make_layer(points.point(kind, name), request, new)
        if kind == 'module':
            _after_module(new, name, made, points.called_apart)
        else:
            node = points.by_qualname[name]
            owner = _parent(node.target) if node.op == 'call_module' else points.owner[node]
            node_points.setdefault(owner, []).append((name, made))
    for owner, items in node_points.items():
        _after_nodes(new, owner, items)
    return new


def adl_points(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{point: {'drop_rate', 'gamma', 'per_sample'}}`` for every ADL placed by ``insert``, plus
    ``'use_drop': False`` / ``'use_importance': False`` for a point with that component switched off.

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
        found[point] = _adl_settings(module)
    return found


def _adl_settings(module: ADL) -> dict[str, Any]:
    """The kwargs that rebuild ``module`` at its point (layout and prefix tokens follow the point)."""
    settings: dict[str, Any] = {
        'drop_rate': module.drop_rate,
        'gamma': module.gamma,
        'per_sample': module.per_sample,
    }
    for mode in _ADL_MODES:
        if not getattr(module, mode):
            settings[mode] = False
    return settings


def inserted_points(model: nn.Module) -> dict[str, InsertedLayer]:
    """``{point: InsertedLayer}`` for every layer ``insert`` placed (ADL included): what sits where.

    ``insert(base, after={p: i.kwargs}, layer=<class>)`` rebuilds one kind of layer; the Hub config records
    ``{point: {'layer': i.layer, 'kwargs': i.kwargs}}`` (see ``timm_adl.hub``).
    """
    found: dict[str, InsertedLayer] = {}
    for path, module in model.named_modules():
        point = getattr(module, 'inserted_point', None)
        if point is None and isinstance(module, ADL):
            point = getattr(module, 'adl_point', None)  # placed by timm_adl 0.1.0
        if not isinstance(point, str):
            continue
        kwargs = getattr(module, 'inserted_kwargs', None)
        if isinstance(module, ADL):
            kwargs = _adl_settings(module)
        found[point] = InsertedLayer(path, layer_name(type(module)), kwargs, module)
    return found


def remove(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with every layer ``insert`` placed taken out: the base model, same class
    and ``state_dict`` keys, eval outputs bit-identical to the model ``insert`` started from.

    Each edit of the ladder is undone: spliced children are deleted, wrappers and ``GraphModule``s give back
    the module they replaced, switched instances get their class back.
    """
    new = copy.deepcopy(model)
    for _ in range(sum(1 for _ in new.modules()) + 1):
        target = next(((p, m) for p, m in new.named_modules() if p and _is_inserted(m)), None)
        if target is None:
            return new
        _undo(new, *target)
    raise RuntimeError('remove: inserted layers keep reappearing (a cycle in the module tree?)')


def _is_inserted(module: nn.Module) -> bool:
    return (
        isinstance(getattr(module, 'inserted_point', None), str)
        or getattr(module, 'inserted_original', None) is not None
        or getattr(module, 'inserted_wrapper', False)
        or (isinstance(module, ADL) and isinstance(getattr(module, 'adl_point', None), str))
    )


def _undo(root: nn.Module, path: str, module: nn.Module) -> None:
    """Undo the edit that put ``module`` at ``path`` (the outermost inserted thing found first)."""
    parent_path, _, name = path.rpartition('.')
    parent = root.get_submodule(parent_path)
    original = getattr(module, 'inserted_original', None)
    if original is not None:  # a GraphModule: its original module comes back, children shared
        original[0].train(module.training)
        parent._modules[name] = original[0]
    elif getattr(module, 'inserted_wrapper', False):
        parent._modules[name] = module._modules['0']
    elif '_timm_adl_base' in vars(type(parent)) and name == type(parent)._timm_adl_child:
        del parent._modules[name]
        parent.__class__ = type(parent)._timm_adl_base
    else:  # spliced into a chain container
        del parent._modules[name]


# -- requests -----------------------------------------------------------------------------------------
def _check_layer(layer: LayerSpec, layer_kwargs: dict[str, Any], adl_settings: dict[str, Any]) -> None:
    if layer is None:
        if layer_kwargs:
            raise ValueError(
                f'insert got {sorted(layer_kwargs)} without layer=; ADL takes {", ".join(_ADL_KWARGS)} '
                '(pass layer=<nn.Module class or factory> to insert another layer)'
            )
        return
    if not callable(layer):
        raise ValueError(f'layer must be an nn.Module class or a factory (point -> module), got {layer!r}')
    if adl_settings != _ADL_DEFAULTS:
        raise ValueError(
            f'{" / ".join(_ADL_KWARGS)} are ADL settings, not for layer={getattr(layer, "__name__", layer)}; '
            'pass that layer its own kwargs'
        )


def _requests(after: Any, defaults: dict[str, Any], layer: LayerSpec) -> list[tuple[str, _Request]]:
    if isinstance(after, str):
        after = [after]
    if isinstance(after, Mapping):
        items = []
        for name, kwargs in after.items():
            kwargs = dict(kwargs or {})
            unknown = sorted(set(kwargs) - set(_ADL_KWARGS))
            if layer is None and unknown:
                raise ValueError(
                    f'unknown ADL settings {unknown} for point {name!r}; expected some of {_ADL_KWARGS}'
                )
            items.append((name, _Request(layer, {**defaults, **kwargs})))
    elif isinstance(after, Sequence) and all(isinstance(a, str) for a in after):
        items = [(name, _Request(layer, dict(defaults))) for name in after]
    else:
        raise ValueError(f'`after` must be a list of point names or a dict name -> kwargs, got {after!r}')
    if not items:
        raise ValueError('`after` names no insertion point')
    if layer is None:
        for _, request in items:
            ADL(**request.kwargs)  # validate early, with ADL's own error messages
    return items


def _make_layer(point: InsertionPoint, request: _Request, root: nn.Module) -> nn.Module:
    """Build the module for one point and label it with the point (and its kwargs, for config files)."""
    layer, kwargs = request.layer, request.kwargs
    if layer is None:
        layout = point.layout if point.layout in LAYOUTS else 'NCHW'
        module: Any = ADL(**kwargs, layout=layout, num_prefix_tokens=point.num_prefix_tokens)
        module.adl_point = point.name
        recorded: dict[str, Any] | None = dict(kwargs)
    elif isinstance(layer, type):
        if not issubclass(layer, nn.Module):
            raise ValueError(f'layer={layer.__name__} is not an nn.Module class')
        module, recorded = layer(**kwargs), dict(kwargs)
    else:
        module, recorded = capture_init(lambda: layer(point, **kwargs))
        if not isinstance(module, nn.Module):
            raise ValueError(
                f'the layer factory {getattr(layer, "__name__", layer)!r} returned {type(module).__name__} for '
                f'point {point.name!r}; it must return an nn.Module'
            )
    module.inserted_point = point.name
    module.inserted_kwargs = recorded
    module.train(root.training)
    return module


def _child_name(module: nn.Module) -> str:
    return 'adl' if isinstance(module, ADL) else 'inserted'


# -- module points ------------------------------------------------------------------------------------
def _stateless(module: nn.Module) -> bool:
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None


def _splice_after(parent: nn.Module, name: str, new_name: str, adl: nn.Module) -> None:
    if new_name in parent._modules:
        what = 'an ADL' if isinstance(adl, ADL) else 'an inserted layer'
        raise ValueError(f'there is already {what} after {name!r} ({new_name!r})')
    items = list(parent._modules.items())
    index = [k for k, _ in items].index(name)
    items.insert(index + 1, (new_name, adl))
    parent._modules.clear()
    parent._modules.update(items)


def _never_apart(path: str) -> bool:
    return False


def _after_module(
    root: nn.Module, path: str, adl: nn.Module, called_apart: Callable[[str], bool] = _never_apart
) -> None:
    """``called_apart(path)``: the model calls that module's children one by one with extra arguments (from
    the trace), so it is no chain even if it is an ``nn.Sequential``."""
    parent_path, _, name = path.rpartition('.')
    parent = root.get_submodule(parent_path)
    module = parent._modules[name]
    adl.train(module.training)
    child = _child_name(adl)
    if children_are_chain(parent) and not called_apart(parent_path):
        _splice_after(parent, name, f'{name}_{child}', adl)
    elif children_are_chain(module) and not called_apart(path):
        _splice_after(module, list(module._modules)[-1], child, adl)
    elif _stateless(module):
        wrapper = nn.Sequential(OrderedDict([('0', module), (child, adl)]))
        wrapper.inserted_wrapper = True  # ``remove`` puts ``module`` back in its place
        parent._modules[name] = wrapper
    elif not _descend(root, path, module, adl, called_apart):
        _subclass_with_adl(module, adl)


def _descend(
    root: nn.Module, path: str, module: nn.Module, adl: nn.Module, called_apart: Callable[[str], bool]
) -> bool:
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
    _after_module(root, f'{path}.{targets.pop()}', adl, called_apart)
    return True


def _subclass_with_adl(module: nn.Module, adl: nn.Module) -> None:
    """Last resort for a module with state whose parent cannot take a sibling and whose forward does not end
    in a child: switch the instance to a subclass whose forward applies its ``adl`` (or ``inserted``) child
    to the output. Keys, attributes and class ancestry stay."""
    child = _child_name(adl)
    if '_timm_adl_base' in vars(type(module)):
        raise ValueError(f'{type(module).__name__} already has a layer inserted after it')
    if child in module._modules or hasattr(module, child):
        raise ValueError(f'{type(module).__name__} already has an attribute or child named "{child}"')
    module.add_module(child, adl)
    module.__class__ = with_adl_class(type(module), child)


_WITH_ADL_CLASSES: dict[tuple[type, str], type] = {}


# TorchScript compiles neither ``*args`` nor a closure over ``base``: a base forward that takes one input gets
# one of these fixed forwards, which reach the base's own forward as a method of the subclass.
def _forward_then_adl(self, x):
    return self.adl(self._timm_adl_base_forward(x))


def _forward_then_inserted(self, x):
    return self.inserted(self._timm_adl_base_forward(x))


_ONE_INPUT_FORWARDS = {'adl': _forward_then_adl, 'inserted': _forward_then_inserted}


def _renamed(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` under another name: TorchScript compiles a method by its function's ``__name__``, so the base's
    ``forward`` reached from the subclass's own ``forward`` must not be called ``forward`` too."""
    new = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    new.__qualname__ = f'{fn.__qualname__.rpartition(".")[0]}.{name}'.lstrip('.')
    new.__module__, new.__kwdefaults__ = fn.__module__, fn.__kwdefaults__
    new.__annotations__ = dict(fn.__annotations__)
    return new


def _takes_one_input(forward: Callable[..., Any]) -> bool:
    """Whether ``forward(self, x)`` is the whole signature (no other argument, no ``*args``/``**kwargs``)."""
    params = list(inspect.signature(forward).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return len(params) == 1 and params[0].kind in kinds


def with_adl_class(base: type, child: str = 'adl') -> type:
    """The (cached) subclass of ``base`` whose forward is ``self.<child>(base.forward(self, ...))``.

    It reports ``base``'s module so torch.fx's default leaf rule treats it as ``base`` was treated, and
    pickles as (``base``, state), so no generated class has to be importable.
    """
    if '_timm_adl_base' in vars(base):
        return base
    if (base, child) not in _WITH_ADL_CLASSES:
        forward = _ONE_INPUT_FORWARDS.get(child) if _takes_one_input(base.forward) else None
        if forward is None:  # any other signature: correct in eager mode and under FX, not scriptable

            def forward(self, *args, **kwargs):
                return getattr(self, child)(base.forward(self, *args, **kwargs))

        def __reduce_ex__(self, protocol):
            return (_rebuild_with_adl, (base, self.__dict__, child))

        suffix = 'WithADL' if child == 'adl' else 'WithInserted'
        namespace = {'forward': forward, '__reduce_ex__': __reduce_ex__, '_timm_adl_base': base}
        namespace['_timm_adl_base_forward'] = _renamed(base.forward, '_timm_adl_base_forward')
        namespace.update(__module__=base.__module__, __qualname__=f'{base.__qualname__}{suffix}')
        namespace['_timm_adl_child'] = child
        cls = type(f'{base.__name__}{suffix}', (base,), namespace)
        if is_notrace_module(base):
            register_notrace_module(cls)  # stays a leaf for timm's FX helpers, as its base was
        _WITH_ADL_CLASSES[base, child] = cls
    return _WITH_ADL_CLASSES[base, child]


def _rebuild_with_adl(base: type, state: dict[str, Any], child: str = 'adl') -> nn.Module:
    module = object.__new__(with_adl_class(base, child))
    module.__setstate__(state)
    return module


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition('.')
    root.get_submodule(parent_path)._modules[name] = new


# -- node points ----------------------------------------------------------------------------------------
def _after_nodes(root: nn.Module, owner: str, items: list[tuple[str, nn.Module]]) -> None:
    """Functional nodes (or repeated module calls) inside ``owner``: one local re-trace for all of them."""
    names = ', '.join(repr(name) for name, _ in items)
    if not owner:
        raise ValueError(
            f'cannot insert after {names}: functional ops in the forward of {type(root).__name__} itself '
            f'would need the whole model re-traced, which would lose its timm methods; name the module '
            f'that produces or consumes it instead'
        )
    module = root.get_submodule(owner)
    try:
        graph, tracer = trace_locally(module)
    except TraceFailure as err:
        raise ValueError(f'cannot insert after {names}: {err}') from err
    local = {q: n for n, q in tracer.node_to_qualname.items()}
    extra = {}
    for name, made in items:
        node = local.get(name[len(owner) + 1 :])
        if node is None:
            raise ValueError(f'cannot find {name!r} when re-tracing {owner!r} ({type(module).__name__})')
        made_name = f'{node.name}_{_child_name(made)}'
        made.train(module.training)
        extra[made_name] = made
        insert_after(graph, node, made_name)
    gm = graph_module(module, graph, extra)
    # a tuple: kept out of the child modules and of state_dict; in meta's preserved attributes: kept by deepcopy
    gm.inserted_original = (module,)
    gm.meta.setdefault('_user_preserved_attributes', {})['inserted_original'] = gm.inserted_original
    _replace(root, owner, gm)


# -- models FX cannot trace ------------------------------------------------------------------------------
def _insert_untraced(model: nn.Module, requests: list[tuple[str, _Request]], err: TraceFailure) -> nn.Module:
    """Module-path surgery only: no shapes, so no aliases, node names or patterns."""
    modules = dict(model.named_modules())
    for name, request in requests:
        if name not in modules or not name:
            close = ', '.join(_close(name, [p for p in modules if p]))
            raise ValueError(
                f'{err}. Without a trace only module paths can be used (module-path surgery); {name!r} is not '
                f'a module path of {type(model).__name__} (closest: {close})'
            ) from err
        unknown = InsertionPoint(None, name, name, (), 0, None)
        _after_module(model, name, _make_layer(unknown, request, model))
    return model


def _close(name: str, vocabulary: list[str]) -> list[str]:
    return difflib.get_close_matches(name, vocabulary, n=6, cutoff=0.5)
