"""Where ADL can go in a timm model: names, shapes, strides and the portable aliases ``poolN`` / ``last``.

Everything here is read off one torch.fx trace of the model (timm's leaf modules and autowrapped
functions respected; a submodule FX cannot trace is kept whole) and two shape propagations with every
tensor swapped for a ``meta`` tensor (no compute, no copy): one at the model's input size, one at twice
that size, so that dims that double are told apart from channels and token counts. The caller's model is
left as it was.

Vocabulary: a *point* is the output of a module (its path, ``'layer3.0'``) or of one traced node (its
dotted node name as ``get_graph_node_names`` prints it, ``'Mixed_6a.max_pool2d'``). A *feature map* is
an (N, C, H, W) output whose H and W scale with the input. A *cut* is a node every input-to-logits path
passes through (the only live tensor at its place in the graph), so never inside a residual branch.

- ``poolN``: the output of the N-th halving of the feature map, counted from the input (a stride-4 stem
  counts twice, so it is ``pool2`` and there is no ``pool1``). Taken at the first cut at that stride and
  lifted to the boundary of the smallest block that contains it: the innermost enclosing module that is
  a child of a chain container (``nn.Sequential`` or a module whose forward just iterates its children)
  and whose output is a cut at the same stride (else a root child; models without cuts, such as HRNet's
  parallel branches, fall back to the innermost chain child), then moved past trailing norm / activation
  layers so it never sits between a conv and them. A map that only feeds tokens or a channels-last layout
  (a ViT's patch embedding) gets no alias.
- ``last``: the last cut feature map, provided no layer with weights processes tokens after it.

Token (N, L, C) and channels-last (N, H, W, C) maps on the input's grid are points too (``layout``);
they get ``poolN`` / ``last`` only when the model has no (N, C, H, W) alias there and they down-sample.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from torch import fx, nn

from .._fx import TraceFailure, Tracer, children_are_chain, children_called_apart, trace
from ..adl import ADL
from ._paths import match_path as _match_path
from ._paths import parent as _parent
from ._paths import prefixes as _prefixes
from .aliases import ALIAS as _ALIAS
from .aliases import AliasRules, is_norm_act_module
from .shapes import default_input_size, eval_mode, grid_layout, is_nchw_map, is_tensor_meta, propagate_twice

__all__ = ['InsertionPoint', 'ModelPoints', 'analyse', 'insertion_points']


@dataclass(frozen=True)
class InsertionPoint:
    """One place where ``insert`` can put a layer (ADL or any other): what a layer factory is given.

    ``alias``: ``'pool3'``, ``'last'``, ``'pool5,last'`` when one point has two aliases, or None.
    ``node``: the dotted FX node name of the output. ``module``: the module path ``insert`` uses (None for
    a functional node). ``shape``: output shape for one image at the probed input size (empty when
    unknown: a model FX cannot trace). ``stride``: the nominal down-sampling factor from the input (2 **
    number of halvings; the patch size for tokens; 0 when unknown). ``layout``: ``'NCHW'``, ``'NHWC'``,
    ``'NLC'`` (tokens on a grid, after ``num_prefix_tokens`` class / register tokens) or None (not a map
    on the input's grid, or unknown).
    """

    alias: str | None
    node: str
    module: str | None
    shape: tuple[int, ...]
    stride: int
    layout: str | None = 'NCHW'
    num_prefix_tokens: int = 0

    @property
    def name(self) -> str:
        return self.module if self.module is not None else self.node

    @property
    def channels(self) -> int | None:
        """The channel count a layer placed here receives (None when unknown)."""
        if not self.shape:
            return None
        return self.shape[0] if self.layout == 'NCHW' else self.shape[-1]


class ModelPoints(AliasRules):
    """The analysis of one model: graph, node names, shapes, halving levels, cuts, module outputs."""

    def __init__(
        self,
        model: nn.Module,
        graph: fx.Graph,
        tracer: Tracer,
        input_size: tuple[int, ...],
        doubled: dict[fx.Node, tuple[int, ...]] | None = None,
    ) -> None:
        self.model = model
        self.graph = graph
        self.input_size = tuple(input_size)
        self.nodes = [n for n in graph.nodes]
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.qualname = {n: tracer.node_to_qualname.get(n, n.name) for n in self.nodes}
        self.owner = {n: tracer.node_owner.get(n, '') for n in self.nodes}
        self.by_qualname = {q: n for n, q in self.qualname.items() if n.op not in ('placeholder', 'output')}
        self.by_fx_name = {n.name: n for n in self.nodes if n.op not in ('placeholder', 'output')}
        self.shape = {n: tuple(n.meta['tensor_meta'].shape) for n in self.nodes if is_tensor_meta(n)}
        self.doubled = doubled  # shapes at twice the input height and width, when the model accepts that
        self._spatial = {n: self._is_spatial(n) for n in self.shape}
        prefix_hint = int(getattr(model, 'num_prefix_tokens', 0) or 0)
        big = doubled or {}
        found = {n: grid_layout(s, big.get(n), self.input_size, prefix_hint) for n, s in self.shape.items()}
        self.grid = {n: g for n, g in found.items() if g is not None and (g[0] != 'NCHW' or self.spatial(n))}
        self.modules = dict(model.named_modules())
        self.opaque = list(tracer.opaque)
        self.tuple_outputs = set(tracer.tuple_outputs)
        self.called = set(tracer.called)
        self.called_with_extra_args = set(tracer.called_with_extra_args)
        self._chain: dict[str, bool] = {}
        self._levels()
        self._cuts()
        self._module_outputs()
        self.missing: dict[str, str] = {}  # alias -> why the model has none
        self.aliases = self._aliases()

    # -- structure ---------------------------------------------------------------------------------
    def path_of(self, node: fx.Node) -> str:
        return node.target if node.op == 'call_module' else self.owner[node]

    def spatial(self, node: fx.Node) -> bool:
        return self._spatial.get(node, False)

    def _is_spatial(self, node: fx.Node) -> bool:
        big = self.doubled.get(node) if self.doubled is not None else None
        return is_nchw_map(self.shape[node], big, self.input_size) if self.doubled is None or big else False

    def _levels(self) -> None:
        # Halvings are counted from one distinct map height to the next, so 'valid' convs (299 -> 149 -> 147)
        # and odd sizes do not add levels, while a stride-4 stem adds two.
        heights = sorted({self.shape[n][2] for n in self.nodes if self.spatial(n)}, reverse=True)
        level_of, level, ref = {}, 0, self.input_size[1]
        for h in heights:
            step = round(math.log2(ref / h))
            if step >= 1:
                level, ref = level + step, h
            level_of[h] = level
        self.level = {n: level_of[self.shape[n][2]] for n in self.nodes if self.spatial(n)}

    def _cuts(self) -> None:
        """Nodes every input-to-output path passes through: the only live tensor at their position."""
        placeholders = [n for n in self.nodes if n.op == 'placeholder']
        reachable = set(placeholders[:1])
        for n in self.nodes:
            if n not in reachable and any(a in reachable for a in n.all_input_nodes):
                reachable.add(n)
        # Tensors and tuples of tensors (split, chunk) stay live until their last use; sizes and ints do not
        # count (``B = x.shape[0]`` used at the end must not hide every cut).
        tracked = [n for n in self.nodes if n in reachable and 'tensor_meta' in n.meta]
        self.cut = set()
        live_until = -1
        for n in tracked:
            i = self.index[n]
            if live_until <= i and n in self.shape and n.op != 'placeholder':
                self.cut.add(n)
            live_until = max(live_until, max((self.index[u] for u in n.users), default=i))

    def _module_outputs(self) -> None:
        """For each module path, the nodes it produces that are used outside of it."""
        self.outputs: dict[str, set[fx.Node]] = {}
        for n in self.nodes:
            if n.op in ('placeholder', 'output', 'get_attr') or n not in self.shape:
                continue
            inside = _prefixes(self.path_of(n))
            for user in n.users:
                outer = set(_prefixes(self.path_of(user))) if user.op != 'output' else set()
                for p in inside:
                    if p not in outer:
                        self.outputs.setdefault(p, set()).add(n)

    def output_node(self, path: str) -> fx.Node | None:
        nodes = self.outputs.get(path)
        return next(iter(nodes)) if nodes is not None and len(nodes) == 1 else None

    def is_chain(self, path: str) -> bool:
        if path not in self._chain:
            self._chain[path] = children_are_chain(self.modules[path]) and not self.called_apart(path)
        return self._chain[path]

    def called_apart(self, path: str) -> bool:
        """The model calls this module's children one by one with extra arguments, never the module."""
        return children_called_apart(path, self.called, self.called_with_extra_args)

    # -- listing ------------------------------------------------------------------------------------
    def candidates(self) -> list[InsertionPoint]:
        """Every block boundary with a spatial output (cuts that a chain child or a root child produces)."""
        alias_of: dict[fx.Node, list[str]] = {}
        for alias, (_, out) in self.aliases.items():
            alias_of.setdefault(out, []).append(alias)
        chosen: dict[fx.Node, str] = {}  # one row per output node: the alias's path, else the innermost path
        for n in self.nodes:
            if not (self.spatial(n) and n in self.cut) or self._is_identity(n):
                continue
            path, out = self.boundary(n)
            if path is None or not self.spatial(out) or self._pre_norm(path, out):
                continue
            if out not in chosen or len(path) > len(chosen[out]):
                chosen[out] = path
        for path, out in self.token_boundaries():
            if out not in chosen or len(path) > len(chosen[out]):
                chosen[out] = path
        for path, out in self.aliases.values():
            chosen[out] = path if path is not None else self.qualname[out]
        points = []
        for out in sorted(chosen, key=self.index.__getitem__):
            path = chosen[out]
            alias = ','.join(alias_of[out]) if out in alias_of else None
            points.append(self.describe(out, path if path in self.modules else None, alias))
        return points

    def describe(self, out: fx.Node, module: str | None, alias: str | None = None) -> InsertionPoint:
        """The ``InsertionPoint`` for output node ``out`` (reached through ``module``, if any)."""
        layout, prefix, _ = self.grid.get(out, (None, 0, None))
        return InsertionPoint(
            alias, self.qualname[out], module, self.shape[out][1:], self.stride(out), layout, prefix
        )

    def stride(self, node: fx.Node) -> int:
        """2 ** halvings for (N, C, H, W) maps; input height over grid height for other grids; else 0."""
        if node in self.level:
            return 2 ** self.level[node]
        if node in self.grid:
            return round(self.input_size[1] / self.grid[node][2][0])
        return 0

    def token_boundaries(self) -> list[tuple[str, fx.Node]]:
        """Block boundaries on channels-last or token grids: modules that are a chain child or a root child
        and whose one output is a cut (a ViT's blocks, a Swin stage, its down-sampling)."""
        if hasattr(self, '_token_rows'):
            return self._token_rows
        innermost: dict[fx.Node, str] = {}
        for path, module in self.modules.items():
            out = self.output_node(path) if path else None
            if out is None or self.grid.get(out, ('NCHW',))[0] == 'NCHW':
                continue
            if out not in self.cut and not self._branch_child(path):
                continue
            if path in self.tuple_outputs:
                continue
            if isinstance(module, (nn.Identity, ADL, nn.ModuleList, nn.ModuleDict)) or self._pre_norm(
                path, out
            ):
                continue  # a ModuleList is never called: its "output" is its last item's
            parent = _parent(
                path
            )  # blocks called in a loop: from a ModuleList, or apart from their Sequential
            in_list = isinstance(self.modules.get(parent), nn.ModuleList) or self.called_apart(parent)
            boundary = '.' not in path or in_list or self.is_chain(_parent(path))
            if boundary and len(path) > len(innermost.get(out, '')):
                innermost[out] = path
        self._token_rows = [(innermost[out], out) for out in sorted(innermost, key=self.index.__getitem__)]
        return self._token_rows

    def _branch_child(self, path: str) -> bool:
        """A child of a chain that is one of parallel branches (a ``ModuleList`` of chains, CrossViT's token
        branches at two patch sizes): its output is a block boundary of its branch, though no cut of the
        whole graph (the other branch runs beside it)."""
        parent = _parent(path)
        if not parent or not isinstance(self.modules.get(_parent(parent)), nn.ModuleList):
            return False
        return self.is_chain(parent)

    def point(self, kind: str, name: str) -> InsertionPoint:
        """The ``InsertionPoint`` of a resolved name; shape and layout unknown inside a timm leaf module."""
        node = self.node_for(kind, name)
        module = name if kind == 'module' else None
        if node is None or node not in self.shape:
            return InsertionPoint(None, name, module, (), 0, None)
        return self.describe(node, module)

    def _pre_norm(self, path: str, node: fx.Node) -> bool:
        """A norm that feeds a conv/linear directly belongs to that layer (ConvNeXt down-sampling norm)."""
        users = list(node.users)
        if (
            path not in self.modules
            or not is_norm_act_module(self.modules[path])
            or len(users) != 1
            or users[0].op != 'call_module'
        ):
            return False
        user = self.modules[users[0].target]
        return not is_norm_act_module(user) and next(user.parameters(recurse=False), None) is not None

    # -- name resolution ---------------------------------------------------------------------------
    def module_point_ok(self, path: str) -> bool:
        out = self.output_node(path)
        return out is not None and out in self.grid

    def resolve(self, name: str) -> list[tuple[str, str]]:
        """``name`` -> [(kind, canonical name)], kind 'module' (module path) or 'node' (dotted node name)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f'insertion point names must be non-empty strings, got {name!r}')
        if name in self.aliases:
            path, out = self.aliases[name]
            return [('module', path)] if path is not None else self.resolve(self.qualname[out])
        if _ALIAS.fullmatch(name) and name not in self.modules and name not in self.by_qualname:
            available = ', '.join(self.aliases) or 'none'
            raise ValueError(
                f'{type(self.model).__name__} has no {name!r}: {self.why_missing(name)} (aliases here: {available})'
            )
        if name in self.modules and name:
            return [('module', name)]
        node = self.by_qualname.get(name) or self.by_fx_name.get(name)
        if node is not None:
            if node.op == 'call_module' and self.output_node(node.target) is node:
                return [('module', node.target)]
            return [('node', self.qualname[node])]
        if any(c in name for c in '*?['):
            matches = [p for p in self.modules if p and _match_path(name, p) and self.module_point_ok(p)]
            if matches:
                return [('module', p) for p in matches]
            raise ValueError(
                f'pattern {name!r} matches no module with a feature-map or token-grid output in '
                f'{type(self.model).__name__}; module paths look like {self._examples()}'
            )
        vocabulary = list(self.aliases) + [p for p in self.modules if p] + list(self.by_qualname)
        close = difflib.get_close_matches(name, vocabulary, n=6, cutoff=0.5)
        hint = f'closest: {", ".join(close)}' if close else f'for example: {self._examples()}'
        raise ValueError(
            f'unknown insertion point {name!r} for {type(self.model).__name__} ({hint}); '
            f'`timm-adl points` lists them all'
        )

    def _examples(self) -> str:
        return ', '.join(list(self.aliases)[:3] + [p.name for p in self.candidates()[-2:]])

    def node_for(self, kind: str, name: str) -> fx.Node | None:
        return self.output_node(name) if kind == 'module' else self.by_qualname.get(name)

    def check_spatial(self, kind: str, name: str, adl: bool = True) -> None:
        """Raise unless the point's output can take the layer: any tensor for a layer, a feature map, a
        channels-last map or tokens on the input's grid for ADL."""
        if kind == 'module' and name in self.tuple_outputs:
            raise ValueError(
                f'module {name!r} of {type(self.model).__name__} returns a tuple, not one tensor; name the node '
                f'of the tensor inside it instead (see `timm-adl points`)'
            )
        node = self.node_for(kind, name)
        if node is None:
            if kind == 'module' and name in self.modules and self.outputs.get(name):
                raise ValueError(
                    f'module {name!r} of {type(self.model).__name__} is called more than once or has several '
                    f'outputs; name one of its nodes instead (see `timm-adl points`)'
                )
            return  # inside a timm leaf module: not traced, checked at run time by ADL itself
        shape = self.shape.get(node)
        if shape is None and not adl:
            raise ValueError(f'the output of {name!r} in {type(self.model).__name__} is not one tensor')
        if adl and (shape is None or (len(shape) != 4 and node not in self.grid)):
            raise ValueError(
                f'the output of {name!r} in {type(self.model).__name__} is not a 4-D (N, C, H, W) feature map '
                f"nor tokens on the input's grid (shape {shape}); ADL needs one"
            )


def analyse(model: nn.Module, input_size: tuple[int, ...] | None = None) -> ModelPoints:
    """Trace ``model`` and propagate shapes at ``input_size`` (default: its pretrained input size).

    Shapes are propagated with every parameter and buffer swapped for a meta tensor (no compute, no copy;
    ``torch.func.functional_call`` restores them), falling back to a real eval-mode forward under
    ``no_grad`` where an op has no meta kernel. Only train/eval flags are touched, and they are restored.
    """
    input_size = tuple(input_size) if input_size is not None else default_input_size(model)
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f'input_size must be (C, H, W) positive ints, got {input_size!r}')
    with eval_mode(model):
        graph, tracer = _trace_whole(model)
        gm = fx.GraphModule(model, graph)
        try:
            doubled = propagate_twice(gm, input_size, meta=True)
        except Exception:
            doubled = propagate_twice(gm, input_size, meta=False)
        return ModelPoints(model, graph, tracer, input_size, doubled)


def _trace_whole(model: nn.Module, max_leaves: int = 16) -> tuple[fx.Graph, Tracer]:
    """Trace the model; a submodule FX cannot trace is kept whole (a leaf) and the trace retried, so the
    rest of the model still gets names, shapes and aliases (points inside that submodule do not)."""
    leaves: list[str] = []
    while True:
        try:
            graph, tracer = trace(model, leaves, default_extra_args=True)
        except TraceFailure as err:
            if not err.module_path or err.module_path in leaves or len(leaves) >= max_leaves:
                raise
            leaves.append(err.module_path)
            continue
        tracer.opaque = leaves
        return graph, tracer


def insertion_points(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)
) -> list[InsertionPoint]:
    """Every block boundary where ADL can go, with aliases, node names, output shapes and strides."""
    return analyse(model, input_size).candidates()
