"""torch.fx plumbing shared by ``points`` (analysis) and ``surgery`` (editing).

One tracer for everything: torchvision's ``NodePathTracer`` (so node names are the dotted vocabulary of
``get_graph_node_names`` / ``create_feature_extractor``) with timm's leaf modules and autowrapped
functions, plus per-call extra leaves (``leaf_paths``) so a module can be traced with its direct children
kept whole. It also remembers which module owned each node and in which module a trace failed.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Iterable

import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from torch import fx, nn
from torchvision.models.feature_extraction import NodePathTracer

from .adl import ADL

__all__ = [
    'TraceFailure',
    'Tracer',
    'children_are_chain',
    'children_called_apart',
    'graph_module',
    'trace',
    'trace_locally',
]


class TraceFailure(RuntimeError):
    """torch.fx could not trace a module; ``module_path`` names the innermost module being traced."""

    def __init__(self, message: str, module_path: str, cause: BaseException) -> None:
        super().__init__(message)
        self.module_path = module_path
        self.cause = cause


class Tracer(NodePathTracer):
    """NodePathTracer with timm's leaves, extra leaves by path, and node -> owning module bookkeeping."""

    def __init__(self, leaf_paths: Iterable[str] = ()) -> None:
        super().__init__(
            leaf_modules=(*get_notrace_modules(), ADL),
            autowrap_functions=tuple(get_notrace_functions()),
            param_shapes_constant=True,
        )
        self.leaf_paths = set(leaf_paths)
        self.node_owner: dict[fx.Node, str] = {}
        self.failed_in: str | None = None
        self.opaque: list[str] = []  # submodules kept whole because FX could not trace them
        self.tuple_outputs: set[str] = set()  # modules whose forward returns a tuple or list
        self.called: set[str] = set()  # every module path called during the trace
        self.called_with_extra_args: set[str] = set()  # ... with more than the one input (attn_mask=, rope=)

    def is_leaf_module(self, m: nn.Module, module_qualname: str) -> bool:
        return module_qualname in self.leaf_paths or super().is_leaf_module(m, module_qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            path = self.path_of_module(m)
            self.called.add(path)
            if len(args) != 1 or kwargs:
                self.called_with_extra_args.add(path)
            out = super().call_module(m, forward, args, kwargs)
            if isinstance(out, (tuple, list)):  # (x, size) blocks: no single tensor to put a layer after
                self.tuple_outputs.add(self.path_of_module(m))
            return out
        except Exception:
            if self.failed_in is None:  # the innermost module fails first
                self.failed_in = self.path_of_module(m)
            raise

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest)
        self.node_owner[proxy.node] = self.current_module_qualname
        return proxy


def trace(
    module: nn.Module, leaf_paths: Iterable[str] = (), *, default_extra_args: bool = False
) -> tuple[fx.Graph, Tracer]:
    """Trace ``module`` (in its current train/eval mode); raise ``TraceFailure`` naming the failing module.

    ``default_extra_args`` fixes every forward argument after the first to its default (timm ViTs take
    ``attn_mask=None``, Hiera ``mask=None``): right for analysing the plain image forward, wrong for a
    graph that replaces a submodule its parent calls with more arguments.
    """
    tracer = Tracer(leaf_paths)
    try:
        graph = tracer.trace(
            module, concrete_args=_default_extra_args(module) if default_extra_args else None
        )
    except Exception as err:  # FX raises TraceError, TypeError, AssertionError, ... from model code
        path = tracer.failed_in or ''
        where = f'{type(module).__name__}' + (f'.{path}' if path else '')
        failing = module.get_submodule(path) if path else module
        raise TraceFailure(
            f'torch.fx cannot trace {where} ({type(failing).__name__}): {type(err).__name__}: {err}',
            path,
            err,
        ) from err
    return graph, tracer


def _default_extra_args(module: nn.Module) -> dict[str, object] | None:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    extra = {
        p.name: p.default
        for p in params[1:]
        if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return extra or None


def trace_locally(module: nn.Module) -> tuple[fx.Graph, Tracer]:
    """Trace ``module``'s own forward with its direct children kept as leaves.

    Raises ``TraceFailure`` if the forward cannot be traced or if its graph depends on train/eval mode (a
    GraphModule would freeze one branch forever).
    """
    children = [name for name, _ in module.named_children()]
    was_training = module.training
    graphs = []
    try:
        for mode in (True, False):
            module.train(mode)
            graphs.append(trace(module, children))
    finally:
        module.train(was_training)
    if _graph_signature(graphs[0][0]) != _graph_signature(graphs[1][0]):
        err = RuntimeError('its forward depends on train/eval mode')
        raise TraceFailure(f'{type(module).__name__}.forward depends on train/eval mode', '', err)
    return graphs[0] if was_training else graphs[1]


def _graph_signature(graph: fx.Graph) -> list[tuple]:
    return [(n.op, str(n.target), str(n.args), str(n.kwargs)) for n in graph.nodes]


def children_called_apart(path: str, called: set[str], called_with_extra_args: set[str]) -> bool:
    """True when the traced model never calls the module at ``path`` as a whole but calls its children one
    by one with more than the running tensor (NaFlexViT: ``for blk in self.blocks: x = blk(x, attn_mask=m)``).

    Such an ``nn.Sequential`` is not a chain: a child spliced into it would be called with those arguments.
    """
    if not path or path in called:
        return False
    prefix = f'{path}.'
    children = {p for p in called_with_extra_args if p.startswith(prefix) and '.' not in p[len(prefix) :]}
    return bool(children)


def children_are_chain(module: nn.Module) -> bool:
    """True when ``module``'s forward calls exactly its children, in ``_modules`` order, each on the last output.

    Such a module can take a new child spliced into ``_modules`` without a change of forward; a probe
    child proves the forward really iterates ``_modules`` (rather than naming each child).
    """
    if isinstance(module, nn.Sequential):
        return True
    names = list(module._modules)
    if not names or any(m is None for m in module._modules.values()):
        return False
    try:
        graph, _ = trace(module, names)
    except TraceFailure:
        return False
    if not _is_plain_chain(graph, names):
        return False
    probe_name = '_timm_adl_probe'
    module._modules[probe_name] = nn.Identity()
    try:
        graph, _ = trace(module, [*names, probe_name])
        return _is_plain_chain(graph, [*names, probe_name])
    except TraceFailure:
        return False
    finally:
        del module._modules[probe_name]


def _is_plain_chain(graph: fx.Graph, names: list[str]) -> bool:
    nodes = list(graph.nodes)
    if len(nodes) != len(names) + 2 or nodes[0].op != 'placeholder' or nodes[-1].op != 'output':
        return False
    prev = nodes[0]
    for node, name in zip(nodes[1:-1], names, strict=True):
        if node.op != 'call_module' or node.target != name or node.args != (prev,) or node.kwargs:
            return False
        prev = node
    return nodes[-1].args == (prev,)


def graph_module(original: nn.Module, graph: fx.Graph, extra: dict[str, nn.Module]) -> fx.GraphModule:
    """A GraphModule running ``graph`` whose parameters, buffers and children are laid out exactly as in
    ``original`` (same objects, same order), plus the stateless ``extra`` children.

    ``fx.GraphModule`` alone copies only what the graph touches, in graph order; restoring the layout keeps
    ``state_dict`` keys, their order and unused submodules unchanged.
    """
    holder = nn.Module()
    holder._modules = OrderedDict(original._modules)
    holder._modules.update(extra)
    holder._parameters = original._parameters
    holder._buffers = original._buffers
    gm = fx.GraphModule(holder, graph, class_name=type(original).__name__)
    gm._parameters = OrderedDict(original._parameters)
    gm._buffers = OrderedDict(original._buffers)
    gm._non_persistent_buffers_set = set(original._non_persistent_buffers_set)
    gm._modules = OrderedDict(original._modules)
    gm._modules.update(extra)
    gm.train(original.training)
    for child in extra.values():
        child.train(original.training)
    # Keep plain attributes a caller may read (e.g. num_features, grad_checkpointing flags).
    for key, value in vars(original).items():
        if not key.startswith('_') and key not in vars(gm) and not hasattr(type(gm), key):
            setattr(gm, key, value)
    return gm


def insert_after(graph: fx.Graph, node: fx.Node, target: str) -> fx.Node:
    """Insert ``call_module(target)`` on ``node``'s output and route every former user through it."""
    with graph.inserting_after(node):
        new = graph.call_module(target, (node,))
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    return new


def dummy_input(input_size: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros((1, *input_size))
