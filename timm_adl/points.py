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
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ._fx import TraceFailure, Tracer, children_are_chain, trace
from .adl import ADL

__all__ = ['InsertionPoint', 'ModelPoints', 'analyse', 'default_input_size', 'insertion_points']

_ACT_FUNCTIONS = {
    'relu', 'relu_', 'relu6', 'gelu', 'silu', 'silu_', 'hardswish', 'hard_swish', 'leaky_relu', 'elu', 'mish',
    'hard_mish', 'swish', 'gelu_tanh', 'quick_gelu', 'celu', 'selu', 'prelu',
}  # fmt: skip
_NORM_ACT_MODULES = (
    'torch.nn.modules.activation', 'torch.nn.modules.batchnorm', 'torch.nn.modules.normalization',
    'torch.nn.modules.instancenorm', 'torch.nn.modules.dropout', 'timm.layers.activations',
    'timm.layers.activations_me', 'timm.layers.norm', 'timm.layers.norm_act', 'timm.layers.create_act',
)  # fmt: skip
_NORM_MODULES = (
    'torch.nn.modules.batchnorm', 'torch.nn.modules.normalization', 'torch.nn.modules.instancenorm',
    'timm.layers.norm', 'timm.layers.norm_act',
)  # fmt: skip
_ALIAS = re.compile(r'pool[1-9][0-9]*|last')
_MAX_UNIT_CHILDREN = 4  # a Sequential of at most this many leaves (conv+norm+act) is one layer, not a stage


@dataclass(frozen=True)
class InsertionPoint:
    """One place where ``insert`` can put an ADL.

    ``alias``: ``'pool3'``, ``'last'``, ``'pool5,last'`` when one point has two aliases, or None.
    ``node``: the dotted FX node name of the output. ``module``: the module path ``insert`` uses (None for
    a functional node). ``shape``: output shape for one image at the probed input size. ``stride``: the
    nominal down-sampling factor from the input (2 ** number of halvings).
    """

    alias: str | None
    node: str
    module: str | None
    shape: tuple[int, ...]
    stride: int

    @property
    def name(self) -> str:
        return self.module if self.module is not None else self.node


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, 'pretrained_cfg', None) or getattr(model, 'default_cfg', None) or {}
    size = cfg.get('input_size') if isinstance(cfg, dict) else None
    return tuple(size) if size and len(size) == 3 else (3, 224, 224)


def _prefixes(path: str) -> list[str]:
    parts = path.split('.') if path else []
    return ['.'.join(parts[: i + 1]) for i in range(len(parts))]


def _parent(path: str) -> str:
    return path.rpartition('.')[0]


def _is_norm_module(module: nn.Module) -> bool:
    kind = type(module)
    return kind.__module__.startswith(_NORM_MODULES) or (
        'Norm' in kind.__name__ and next(module.children(), None) is None
    )


def _is_norm_act_module(module: nn.Module) -> bool:
    kind = type(module)
    if kind.__module__.startswith(_NORM_ACT_MODULES):
        return True
    return 'Norm' in kind.__name__ and next(module.children(), None) is None


class ModelPoints:
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
        self.shape = {n: tuple(n.meta['tensor_meta'].shape) for n in self.nodes if _is_tensor_meta(n)}
        self.doubled = doubled  # shapes at twice the input height and width, when the model accepts that
        self._spatial = {n: self._is_spatial(n) for n in self.shape}
        self.modules = dict(model.named_modules())
        self.opaque = list(tracer.opaque)
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
        """An (N, C, H, W) output with more than one pixel.

        With a second probe at twice the input size, H and W must (roughly) double: this rejects NHWC
        tensors (C does not grow) and attention maps (N x N tokens grow fourfold). Without one (models with
        a fixed input size), H/W must keep the input's aspect and be a power-of-two fraction of it.
        """
        shape = self.shape[node]
        if len(shape) != 4 or shape[2] * shape[3] <= 1 or shape[0] != 1:
            return False
        in_h, in_w = self.input_size[1:]
        if shape[2] > in_h or shape[3] > in_w:
            return False
        if self.doubled is not None:
            big = self.doubled.get(node)
            if big is None or len(big) != 4 or big[1] != shape[1]:
                return False
            return all(1.6 <= b / s <= 2.7 for b, s in zip(big[2:], shape[2:], strict=True))
        same_aspect = abs(math.log((shape[2] / shape[3]) / (in_h / in_w))) < 0.08
        octaves = math.log2(in_h / shape[2])
        return same_aspect and abs(octaves - round(octaves)) < 0.35

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
            self._chain[path] = children_are_chain(self.modules[path])
        return self._chain[path]

    # -- aliases -------------------------------------------------------------------------------------
    def lift(self, node: fx.Node) -> tuple[str | None, fx.Node]:
        """Module boundary (path, output node) of the smallest block holding ``node``, at ``node``'s level;
        ``(None, node)`` if there is none."""
        stack = list(reversed(_prefixes(self.path_of(node))))  # innermost first
        level = self.level.get(node)

        def usable(out: fx.Node | None, cut_needed: bool) -> bool:
            return (
                out is not None
                and self.spatial(out)
                and self.level[out] == level
                and (out in self.cut or not cut_needed)
            )

        for cut_needed in (True, False):
            for path in stack:
                if usable(self.output_node(path), cut_needed) and self.is_chain(_parent(path)):
                    return self._normalise(path), self.output_node(path)
            if cut_needed and stack and usable(self.output_node(stack[-1]), True):
                return stack[-1], self.output_node(stack[-1])
        for path in reversed(stack):  # no block boundary: the outermost module with one output at the level
            if usable(self.output_node(path), False):
                return path, self.output_node(path)
        return None, node

    def _normalise(self, path: str) -> str:
        """The last child of a small all-leaf Sequential (stem, down-sampling unit) names its parent."""
        parent = _parent(path)
        while parent:
            module = self.modules[parent]
            names = list(module._modules)
            leaves = all(next(m.children(), None) is None for m in module.children())
            if not (isinstance(module, nn.Sequential) and names and names[-1] == path.rpartition('.')[2]):
                break
            if not leaves or len(names) > _MAX_UNIT_CHILDREN:
                break
            path, parent = parent, _parent(parent)
        return path

    def _follows_norm_act(self, node: fx.Node) -> fx.Node | None:
        """The output of the norm / activation that ``node`` feeds, if that is all ``node`` feeds."""
        users = list(node.users)
        if len(users) != 1 or users[0].args[:1] != (node,):
            return None
        user = users[0]
        inside = set(_prefixes(self.path_of(node)))
        entered = [p for p in _prefixes(self.path_of(user)) if p not in inside]
        if entered:  # the user is (inside) a module: a norm/act module, possibly traced through (LayerNorm2d)
            module = self.modules.get(entered[0])
            if module is None or not _is_norm_act_module(module):
                return None
            out = self.output_node(entered[0])
            return out if out is not None and out in self.shape else None
        if user.op in ('call_function', 'call_method') and user in self.shape:
            name = user.target if isinstance(user.target, str) else getattr(user.target, '__name__', '')
            return user if name in _ACT_FUNCTIONS else None
        return None

    def boundary(self, node: fx.Node) -> tuple[str | None, fx.Node]:
        """Lift to a block boundary, then step over trailing norm/activation layers, until stable."""
        path, out = self.lift(node)
        for _ in range(len(self.nodes)):
            nxt = self._follows_norm_act(out)
            if nxt is None:
                break
            path, out = self.lift(nxt)
        return path, out

    def _aliases(self) -> dict[str, tuple[str | None, fx.Node]]:
        aliases: dict[str, tuple[str | None, fx.Node]] = {}
        first: dict[int, fx.Node] = {}  # per level: the first node on the main path (a cut), else the first
        for n in self.nodes:
            level = self.level.get(n)
            if level and (level not in first or (first[level] not in self.cut and n in self.cut)):
                first[level] = n
        for level, n in sorted(first.items()):
            point = self.boundary(n)
            if point[0] is None and not self.owner[point[1]]:
                # a functional op in the root forward cannot take an ADL: use the next block boundary
                later = (m for m in self.nodes[self.index[n] + 1 :] if self.level.get(m) == level)
                point = next((b for b in map(self.boundary, later) if b[0] is not None), point)
            where = f'the stride-{2**level} map ({self.qualname[n]})'
            if not self.spatial(point[1]) or self.level[point[1]] != level:
                self.missing[f'pool{level}'] = f'{where} has no block boundary at that stride'
            elif reason := self._inside_tokens(point):
                self.missing[f'pool{level}'] = f'{where} {reason}'
            else:
                aliases[f'pool{level}'] = point
        spatial_cuts = [
            n for n in self.nodes if n in self.cut and self.spatial(n) and not self._is_identity(n)
        ]
        if not spatial_cuts:
            self.missing['last'] = 'no (N, C, H, W) feature map on the main path'
        elif self._tokens_after(spatial_cuts[-1]):
            self.missing['last'] = (
                f'layers with weights still process tokens or channels-last maps after the last (N, C, H, W) '
                f'map ({self.qualname[spatial_cuts[-1]]})'
            )
        else:
            aliases['last'] = self.boundary(spatial_cuts[-1])
        return aliases

    def why_missing(self, alias: str) -> str:
        """Why an alias (``pool3``, ``last``) does not exist in this model, in one phrase."""
        if alias in self.missing:
            return self.missing[alias]
        strides = sorted({2**lv for lv in self.level.values() if lv})
        seen = (
            f'(N, C, H, W) maps at strides {strides}' if strides else 'no (N, C, H, W) maps after the input'
        )
        return f'no (N, C, H, W) feature map at stride {2 ** int(alias[4:])}: {seen}'

    def _inside_tokens(self, point: tuple[str | None, fx.Node]) -> str | None:
        """Why the point's map is only a step towards tokens or a channels-last layout (a ViT's patch
        embedding, PiT's pooling conv, an attention block's pooled keys) rather than a feature map; None
        if it is a feature map."""
        path, out = point[0] if point[0] is not None else self.path_of(point[1]), point[1]
        users = [u for u in out.users if u in self.shape]
        if users and all(self._token_consumer(out, u) for u in users):
            return 'only feeds tokens or a channels-last layout'
        for prefix in _prefixes(path):  # a chain (a stage list) says nothing by its last output, a block does
            block_out = self.output_node(prefix)
            if block_out is not None and self._is_tokens(block_out) and not self.is_chain(prefix):
                return f'is inside {prefix}, which outputs tokens or a channels-last map'
        return None

    def _token_consumer(self, node: fx.Node, user: fx.Node) -> bool:
        """``user`` turns ``node`` into tokens; a module entered on the way counts by its own output (a
        LayerNorm2d permutes internally but returns a map), the innermost such module first."""
        inside = set(_prefixes(self.path_of(node)))
        entered = [p for p in _prefixes(self.path_of(user)) if p not in inside]
        for path in reversed(entered):
            block_out = self.output_node(path)
            if block_out is not None:
                return self._is_tokens(block_out)
        return self._is_tokens(user)

    def _is_tokens(self, node: fx.Node) -> bool:
        return node in self.shape and not self.spatial(node) and self._positions(node) > 1

    def _positions(self, node: fx.Node) -> int:
        shape = self.shape.get(node, ())
        if len(shape) == 3:
            return shape[1]
        return shape[-2] * shape[-1] if len(shape) == 4 else 1

    def _is_identity(self, node: fx.Node) -> bool:
        """nn.Identity, or an ADL already in the model (identity for shapes; the point is before it)."""
        return node.op == 'call_module' and isinstance(self.modules.get(node.target), (nn.Identity, ADL))

    def _tokens_after(self, node: fx.Node) -> bool:
        """Whether layers with weights still process many positions after ``node`` (a ViT after its patch
        embedding, a channels-last stage): then ``node`` is not the model's last feature map."""
        for n in self.nodes[self.index[node] + 1 :]:
            if n.op != 'call_module' or self._positions(n) <= 1:
                continue
            if next(self.modules[n.target].parameters(), None) is not None:
                return True
        return False

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
        for path, out in self.aliases.values():
            chosen[out] = path if path is not None else self.qualname[out]
        points = []
        for out in sorted(chosen, key=self.index.__getitem__):
            path = chosen[out]
            alias = ','.join(alias_of[out]) if out in alias_of else None
            module = path if path in self.modules else None
            points.append(
                InsertionPoint(alias, self.qualname[out], module, self.shape[out][1:], 2 ** self.level[out])
            )
        return points

    def _pre_norm(self, path: str, node: fx.Node) -> bool:
        """A norm that feeds a conv/linear directly belongs to that layer (ConvNeXt down-sampling norm)."""
        users = list(node.users)
        if (
            path not in self.modules
            or not _is_norm_act_module(self.modules[path])
            or len(users) != 1
            or users[0].op != 'call_module'
        ):
            return False
        user = self.modules[users[0].target]
        return not _is_norm_act_module(user) and next(user.parameters(recurse=False), None) is not None

    # -- name resolution ---------------------------------------------------------------------------
    def module_point_ok(self, path: str) -> bool:
        out = self.output_node(path)
        return out is not None and self.spatial(out)

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
                f'pattern {name!r} matches no module with a spatial (N, C, H, W) output in '
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

    def check_spatial(self, kind: str, name: str) -> None:
        node = self.node_for(kind, name)
        if node is None:
            if kind == 'module' and name in self.modules and self.outputs.get(name):
                raise ValueError(
                    f'module {name!r} of {type(self.model).__name__} is called more than once or has several '
                    f'outputs; name one of its nodes instead (see `timm-adl points`)'
                )
            return  # inside a timm leaf module: not traced, checked at run time by ADL itself
        shape = self.shape.get(node)
        if shape is None or len(shape) != 4:
            raise ValueError(
                f'the output of {name!r} in {type(self.model).__name__} is not a 4-D (N, C, H, W) feature map '
                f'(shape {shape}); ADL needs one'
            )


def _is_tensor_meta(node: fx.Node) -> bool:
    return isinstance(node.meta.get('tensor_meta'), TensorMetadata)


def _match_path(pattern: str, path: str) -> bool:
    """Shell-style match, segment by segment: ``'stages.*'`` matches ``stages.0`` but not ``stages.0.blocks``;
    ``'**'`` matches any number of segments."""
    pat, parts = pattern.split('.'), path.split('.')

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == '**':
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and fnmatch.fnmatchcase(parts[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def analyse(model: nn.Module, input_size: tuple[int, ...] | None = None) -> ModelPoints:
    """Trace ``model`` and propagate shapes at ``input_size`` (default: its pretrained input size).

    Shapes are propagated with every parameter and buffer swapped for a meta tensor (no compute, no copy;
    ``torch.func.functional_call`` restores them), falling back to a real eval-mode forward under
    ``no_grad`` where an op has no meta kernel. Only train/eval flags are touched, and they are restored.
    """
    input_size = tuple(input_size) if input_size is not None else default_input_size(model)
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f'input_size must be (C, H, W) positive ints, got {input_size!r}')
    with _eval_mode(model):
        graph, tracer = _trace_whole(model)
        gm = fx.GraphModule(model, graph)
        try:
            doubled = _propagate_twice(gm, input_size, meta=True)
        except Exception:
            doubled = _propagate_twice(gm, input_size, meta=False)
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


def _propagate_twice(gm: fx.GraphModule, input_size: tuple[int, ...], meta: bool) -> dict | None:
    """Shapes at twice the input size (None if the model refuses it), then ``tensor_meta`` at the size."""
    c, h, w = input_size
    doubled = None
    try:  # a second probe at twice the size tells spatial dims from channels and tokens
        _propagate(gm, (c, 2 * h, 2 * w), meta)
        doubled = {n: tuple(n.meta['tensor_meta'].shape) for n in gm.graph.nodes if _is_tensor_meta(n)}
    except Exception:
        doubled = None  # e.g. a ViT with a fixed position embedding
    for n in gm.graph.nodes:
        n.meta.pop('tensor_meta', None)
    try:
        _propagate(gm, input_size, meta)
    except Exception as err:
        raise RuntimeError(
            f'running {type(gm).__name__} on a (1, {c}, {h}, {w}) input failed: {type(err).__name__}: {err}'
        ) from err
    return doubled


class _MetaShapeProp(ShapeProp):
    """ShapeProp that passes tensors straight through norm layers: they keep the shape, and their meta
    decompositions are the slowest part of a meta run."""

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if args and isinstance(args[0], torch.Tensor) and _is_norm_module(module):
            return args[0]
        return super().call_module(target, args, kwargs)


class _Runner(nn.Module):
    def __init__(self, gm: fx.GraphModule, meta: bool) -> None:
        super().__init__()
        self.gm = gm
        self.meta = meta

    def forward(self, x: torch.Tensor) -> None:
        (_MetaShapeProp if self.meta else ShapeProp)(self.gm).propagate(x)


def _propagate(gm: fx.GraphModule, input_size: tuple[int, ...], meta: bool) -> None:
    runner = _Runner(gm, meta)
    # ShapeProp prints a traceback before re-raising; a refused probe is an expected outcome here
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        if not meta:
            device = next((t.device for t in gm.parameters()), torch.device('cpu'))
            runner(torch.zeros((1, *input_size), device=device))
            return
        tensors = dict(runner.named_parameters(remove_duplicate=False))
        tensors.update(runner.named_buffers(remove_duplicate=False))
        tensors = {k: torch.empty_like(v, device='meta') for k, v in tensors.items()}
        torch.func.functional_call(
            runner, tensors, (torch.zeros((1, *input_size), device='meta'),), strict=False
        )


def insertion_points(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)
) -> list[InsertionPoint]:
    """Every block boundary where ADL can go, with aliases, node names, output shapes and strides."""
    return analyse(model, input_size).candidates()
