"""The portable aliases ``poolN`` / ``last``: which block boundary each names in a traced model.

``AliasRules`` is the part of ``ModelPoints`` that finds them (see the package docstring for the rules);
it reads the graph, shapes, levels and cuts that ``ModelPoints`` computed.
"""

from __future__ import annotations

import math
import re

from torch import fx, nn

from ..adl import ADL
from ._paths import parent as _parent
from ._paths import prefixes as _prefixes

__all__ = ['ALIAS', 'AliasRules', 'is_norm_act_module']

_ACT_FUNCTIONS = {
    'relu', 'relu_', 'relu6', 'gelu', 'silu', 'silu_', 'hardswish', 'hard_swish', 'leaky_relu', 'elu', 'mish',
    'hard_mish', 'swish', 'gelu_tanh', 'quick_gelu', 'celu', 'selu', 'prelu',
}  # fmt: skip
_NORM_ACT_MODULES = (
    'torch.nn.modules.activation', 'torch.nn.modules.batchnorm', 'torch.nn.modules.normalization',
    'torch.nn.modules.instancenorm', 'torch.nn.modules.dropout', 'timm.layers.activations',
    'timm.layers.activations_me', 'timm.layers.norm', 'timm.layers.norm_act', 'timm.layers.create_act',
)  # fmt: skip
ALIAS = re.compile(r'pool[1-9][0-9]*|last')
_MAX_UNIT_CHILDREN = 4  # a Sequential of at most this many leaves (conv+norm+act) is one layer, not a stage


def is_norm_act_module(module: nn.Module) -> bool:
    kind = type(module)
    if kind.__module__.startswith(_NORM_ACT_MODULES):
        return True
    return 'Norm' in kind.__name__ and next(module.children(), None) is None


class AliasRules:
    """``poolN`` / ``last`` for ``ModelPoints`` (a mixin: it uses the analysis state of ``ModelPoints``)."""

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
            if module is None or not is_norm_act_module(module):
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
        self._token_aliases(aliases)
        return aliases

    def _token_aliases(self, aliases: dict[str, tuple[str | None, fx.Node]]) -> None:
        """``poolN`` / ``last`` on channels-last or token block boundaries (Swin, MambaOut), where the
        (N, C, H, W) rules found none and the token maps themselves down-sample (at least two strides; a
        plain ViT has one, so its blocks are named instead)."""
        rows = [(path, out, self._grid_level(out)) for path, out in self.token_boundaries()]
        rows = [row for row in rows if row[2] is not None]
        if len({level for _, _, level in rows}) < 2:
            return
        for path, out, level in rows:
            name = f'pool{level}'
            if level and name not in aliases:
                aliases[name] = (path, out)
                self.missing.pop(name, None)
        if 'last' not in aliases:
            aliases['last'] = rows[-1][:2]
            self.missing.pop('last', None)

    def _grid_level(self, node: fx.Node) -> int | None:
        """Halvings from the input to a token / channels-last grid, when its stride is a power of two."""
        stride = self.stride(node)
        level = round(math.log2(stride)) if stride > 0 else None
        return level if level is not None and 2**level == stride else None

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
