"""The parts of a timm classifier a CAM needs: the layout of its features and its head.

timm's ``forward_features`` returns one of three layouts: (N, C, h, w) maps (most CNNs), (N, h, w, C) maps
(``output_fmt='NHWC'``: Swin, MambaOut, ...) or (N, L, C) tokens (ViT, DeiT, EVA, BEiT, ...: the first
``num_prefix_tokens`` are class/register tokens, the rest patch tokens in row-major grid order).
:class:`FeatureLayout` names which, and :func:`to_grid` turns any of them into an (N, C, h, w) grid.

The head is treated as a black box (``forward_head``) fed one feature cell at a time
(:func:`dense_head_logits`): a one-cell map (or a token sequence whose every token is that cell) goes
through the head's pooling unchanged, so the layers after the pooling (norms, 1x1 convs, activations, MLPs,
the classifier) run per cell. Where those layers are linear the spatial mean of the per-cell logits is the
real logit; otherwise it is an approximation, which :func:`dense_head_gap` measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'ClassGradients',
    'FeatureLayout',
    'branch_layouts',
    'class_score_gradients',
    'classifier_weights',
    'combine_branch_maps',
    'dense_head_branches',
    'dense_head_gap',
    'dense_head_logits',
    'feature_layout',
    'linear_classifier',
    'pooled_token_source',
    'pooled_tokens',
    'to_grid',
]

_HEAD_METHODS = ('forward_features', 'forward_head', 'get_classifier')
_MAX_POOLS = ('max', 'avgmax', 'catavgmax', 'fastmax', 'fastavgmax', 'fastcatavgmax')


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return cfg.get('architecture') or type(model).__name__


def _unwrap(model: nn.Module) -> nn.Module:
    """The timm model inside a (Distributed)DataParallel wrapper, which hides forward_features & co."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def head_description(model: nn.Module) -> str:
    """Name the head-like top-level modules, so an error says what was found instead of GAP + linear."""
    keys = ('global_pool', 'head', 'fc', 'classifier', 'logits', 'last_linear')
    found = []
    for name, mod in model.named_children():
        if any(k in name.lower() for k in keys):
            desc = type(mod).__name__
            pool_type = getattr(mod, 'pool_type', None)
            if pool_type is not None:
                desc += f'(pool_type={pool_type!r})'
            found.append(f'{name}={desc}')
    return ', '.join(found) or 'no head-like modules'


def _check_head_methods(model: nn.Module, name: str) -> None:
    """CAMs need timm's classifier interface: say which of its methods the model lacks."""
    missing = [m for m in _HEAD_METHODS if not hasattr(model, m)]
    if missing:
        raise ValueError(
            f'CAM needs a timm classifier with forward_features/forward_head/get_classifier; '
            f'model {name!r} has no {", ".join(missing)}'
        )


def check_timm_classifier(model: nn.Module) -> None:
    """A clear error for a module without timm's classifier interface, or for a headless one."""
    name = _model_name(model)
    _check_head_methods(model, name)
    fc = model.get_classifier()
    if isinstance(fc, nn.Identity) or getattr(model, 'num_classes', 1) == 0:
        raise ValueError(
            f'CAM needs class scores, but get_classifier() of model {name!r} is {type(fc).__name__} '
            f'(num_classes={getattr(model, "num_classes", "?")}); create it with num_classes >= 1'
        )


def linear_classifier(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(K, D) weight and (K,) bias (or None) of ``get_classifier()`` when it is one linear layer, else None."""
    fc = model.get_classifier()
    if isinstance(fc, nn.Linear):
        return fc.weight, fc.bias
    if isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1:
        return fc.weight.flatten(1), fc.bias
    return None


def classifier_weights(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (K, C) weight and (K,) bias of the model's linear classifier (``get_classifier()``).

    Accepts ``nn.Linear`` and 1x1 ``nn.Conv2d`` classifiers; anything else raises ``ValueError``.
    """
    model = _unwrap(model)
    name = _model_name(model)
    _check_head_methods(model, name)
    found = linear_classifier(model)
    if found is None:
        fc = model.get_classifier()
        raise ValueError(
            f'CAM needs a global-average-pool + linear head, but get_classifier() of model {name!r} is '
            f'{type(fc).__name__} (num_classes={getattr(model, "num_classes", "?")}); expected nn.Linear '
            f'or a 1x1 nn.Conv2d'
        )
    return found


def max_pooled(model: nn.Module) -> bool:
    """Whether the head pools with a (partial) max: no per-cell decomposition of the logit exists then."""
    pool = getattr(model, 'global_pool', None)
    if isinstance(pool, str) and pool in _MAX_POOLS:
        return True
    for name, mod in model.named_modules():
        pool_type = getattr(mod, 'pool_type', None)
        if isinstance(pool_type, str) and pool_type in _MAX_POOLS and 'pool' in name.split('.')[-1]:
            return True
    return False


# ----------------------------------------------------------------------------------------------------
# feature layout


@dataclass(frozen=True)
class FeatureLayout:
    """How ``forward_features`` lays out its output: 'NCHW', 'NHWC' or 'NLC' (tokens) on an (h, w) grid."""

    kind: str
    grid: tuple[int, int]
    num_prefix_tokens: int = 0


def _token_grid(n_patch: int, input_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) with h * w = n_patch closest to the input's aspect ratio (patch tokens are row-major)."""
    aspect = input_hw[0] / max(input_hw[1], 1)
    best = None
    for h in range(1, math.isqrt(n_patch) + 1):
        if n_patch % h:
            continue
        for hh, ww in ((h, n_patch // h), (n_patch // h, h)):
            score = abs(math.log(hh / ww) - math.log(aspect))
            if best is None or score < best[0]:
                best = (score, (hh, ww))
    return best[1]


def _prefix_tokens(model: nn.Module, length: int, input_hw: tuple[int, int]) -> int:
    """``num_prefix_tokens``; for models without it (VOLO), the fewest leading tokens (0-2) that leave a
    grid of the input's aspect ratio (197 tokens on a square input: one class token and 14 x 14)."""
    given = getattr(model, 'num_prefix_tokens', None)
    if isinstance(given, int):
        return given
    aspect = input_hw[0] / max(input_hw[1], 1)
    for prefix in range(3):
        if length - prefix >= 1:
            h, w = _token_grid(length - prefix, input_hw)
            if abs(math.log(h / w) - math.log(aspect)) <= math.log(1.5):
                return prefix
    return 0


def _channels_last(model: nn.Module, feats: torch.Tensor) -> bool:
    for owner in (model, getattr(model, 'head', None)):
        fmt = getattr(owner, 'output_fmt', None) if owner is model else getattr(owner, 'input_fmt', None)
        if isinstance(fmt, str) and fmt.upper() in ('NHWC', 'NCHW'):
            return fmt.upper() == 'NHWC'
    width = getattr(model, 'num_features', None)
    return width is not None and feats.shape[-1] == width and feats.shape[1] != width


def feature_layout(model: nn.Module, feats: torch.Tensor, input_hw: tuple[int, int]) -> FeatureLayout:
    """The layout of ``forward_features``' output ``feats`` for inputs of size ``input_hw``."""
    name = _model_name(model)
    if not isinstance(feats, torch.Tensor):
        raise ValueError(
            f'CAM needs one feature map, but forward_features of model {name!r} returned a '
            f'{type(feats).__name__} (multi-branch features: one token set per branch and scale)'
        )
    if feats.ndim == 4:
        if _channels_last(model, feats):
            return FeatureLayout('NHWC', (int(feats.shape[1]), int(feats.shape[2])))
        return FeatureLayout('NCHW', (int(feats.shape[2]), int(feats.shape[3])))
    if feats.ndim == 3:
        prefix = _prefix_tokens(model, int(feats.shape[1]), input_hw)
        n_patch = int(feats.shape[1]) - prefix
        if n_patch < 1:
            raise ValueError(
                f'forward_features of model {name!r} returned {feats.shape[1]} tokens, all of them '
                f'prefix tokens (num_prefix_tokens={prefix}): no patch grid to map'
            )
        return FeatureLayout('NLC', _token_grid(n_patch, input_hw), prefix)
    raise ValueError(
        f'CAM needs a spatial feature map, but forward_features of model {name!r} returned shape '
        f'{tuple(feats.shape)}; expected (N, C, h, w), (N, h, w, C) or (N, L, C) tokens'
    )


def to_grid(feats: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """(N, C, h, w) view of features in ``layout`` (prefix tokens dropped)."""
    if layout.kind == 'NCHW':
        return feats
    if layout.kind == 'NHWC':
        return feats.permute(0, 3, 1, 2)
    h, w = layout.grid
    patches = feats[:, layout.num_prefix_tokens :]
    return patches.transpose(1, 2).reshape(feats.shape[0], feats.shape[-1], h, w)


def _cells_as_head_input(cells: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """(M, C) feature cells as M one-cell inputs of ``forward_head``: a 1x1 map, or a sequence of
    ``num_prefix_tokens + 1`` copies of the cell (class-token, average and max pooling all return the cell),
    as a stride-0 view (:func:`_head_on_cells` copies it only for a head that needs contiguous memory)."""
    m, c = cells.shape
    if layout.kind == 'NCHW':
        return cells.reshape(m, c, 1, 1)
    if layout.kind == 'NHWC':
        return cells.reshape(m, 1, 1, c)
    return cells[:, None, :].expand(m, layout.num_prefix_tokens + 1, c)  # a view: no copy per token


def _cells(feats: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """(N * h * w, C) feature cells in row-major order; token and channels-last features already are."""
    if layout.kind == 'NLC':
        return feats[:, layout.num_prefix_tokens :].reshape(-1, feats.shape[-1])
    if layout.kind == 'NHWC':
        return feats.reshape(-1, feats.shape[-1])
    grid = to_grid(feats, layout)
    return grid.flatten(2).transpose(1, 2).reshape(-1, grid.shape[1])  # (N * h * w, C), row-major cells


def _head_on_cells(model: nn.Module, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
    """``forward_head`` on one-cell inputs; a head that reshapes with ``view`` gets a contiguous copy."""
    head = (lambda t: model.forward_head(t, pre_logits=True)) if pre_logits else model.forward_head
    if x.is_contiguous():
        return head(x)
    try:
        return head(x)
    except RuntimeError:
        return head(x.contiguous())


def _pre_logits_are_classifier_input(model: nn.Module, feats: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether ``get_classifier()(forward_head(x, pre_logits=True)) == forward_head(x)`` on this batch, so
    the dense head can stop at the pre-logits and apply only the rows of the wanted classes."""
    found = linear_classifier(model)
    if found is None:
        return False
    weight, bias = found
    try:
        pre = model.forward_head(feats, pre_logits=True)
    except TypeError:  # a forward_head without pre_logits
        return False
    pre = pre.flatten(1).float()
    if pre.shape[1] != weight.shape[1] or logits.ndim != 2:
        return False
    expect = pre @ weight.detach().float().t() + (0 if bias is None else bias.detach().float())
    tol = 1e-3 * (1.0 + logits.float().abs().max().item())
    return bool((expect - logits.float()).abs().max().item() <= tol)


def dense_head_logits(
    model: nn.Module,
    feats: torch.Tensor,
    layout: FeatureLayout,
    logits: torch.Tensor,
    classes: torch.Tensor | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """The head applied to every feature cell: (N, T, h, w) scores of ``classes`` (N, T), or of all K
    classes when ``classes`` is None. ``logits`` (the real ones) decide whether the head can stop at the
    pre-logits (a linear classifier: only T rows are applied). Runs without gradients."""
    n = feats.shape[0]
    h, w = layout.grid
    cells = _cells(feats, layout)
    split = _pre_logits_are_classifier_input(model, feats, logits)
    outs = []
    for start in range(0, cells.shape[0], chunk):
        x = _cells_as_head_input(cells[start : start + chunk], layout)
        outs.append(_head_on_cells(model, x, pre_logits=split).flatten(1).float())
    dense = torch.cat(outs).reshape(n, h * w, -1)  # (N, hw, D or K)
    if split:
        weight, bias = linear_classifier(model)
        weight = weight.detach().float()
        if classes is None:
            scores = torch.einsum('npd,kd->nkp', dense, weight)
            if bias is not None:
                scores = scores + bias.detach().float()[None, :, None]
        else:
            scores = torch.einsum('npd,ntd->ntp', dense, weight[classes])
            if bias is not None:
                scores = scores + bias.detach().float()[classes][..., None]
    else:
        if dense.shape[-1] != logits.shape[-1]:
            raise ValueError(
                f'the head of model {_model_name(model)!r} applied to one feature cell gave '
                f'{dense.shape[-1]} outputs, not the {logits.shape[-1]} class scores'
            )
        scores = dense.transpose(1, 2)
        if classes is not None:
            scores = scores.gather(1, classes[..., None].expand(-1, -1, h * w))
    return scores.reshape(n, scores.shape[1], h, w)


def dense_head_gap(model: nn.Module, images: torch.Tensor) -> float:
    """max |spatial mean of the per-cell logits - real logits| / max |real logits| on ``images``.

    0 (up to rounding) where the layers after the pooling are linear (GAP + linear, Swin's NHWC head);
    the size of the approximation elsewhere (a norm, an activation or an MLP after the pooling, a class
    token instead of a mean)."""
    model = _unwrap(model)
    with torch.no_grad():
        feats = model.forward_features(images)
        logits = model.forward_head(feats).float()
        input_hw = tuple(images.shape[-2:])
        if isinstance(feats, (list, tuple)):
            dense = dense_head_branches(model, list(feats), branch_layouts(model, feats, input_hw))
        else:
            layout = feature_layout(model, feats, input_hw)
            if pooled_tokens(layout):
                feats, layout = pooled_token_source(model, images, layout.num_prefix_tokens + 1) or (
                    feats,
                    layout,
                )
            dense = dense_head_logits(model, feats, layout, logits)
    diff = (dense.mean((2, 3)) - logits).abs().max().item()
    return diff / max(logits.abs().max().item(), 1e-12)


# ----------------------------------------------------------------------------------------------------
# multi-branch features (CrossViT, CoaT) and pooled tokens (PiT)


def _stride_grid(n_patch: int, input_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The (h, w) grid of ``n_patch`` cells that an integer stride s makes of the input (floor or ceil of
    H / s, W / s), or None: a token set that fits no stride is not a patch grid (e.g. hidden states)."""
    h_in, w_in = input_hw
    for s in range(1, max(h_in, w_in) + 1):
        for gh, gw in ((h_in // s, w_in // s), (-(-h_in // s), -(-w_in // s))):
            if gh >= 1 and gw >= 1 and gh * gw == n_patch:
                return gh, gw
        if (-(-h_in // s)) * (-(-w_in // s)) < n_patch:
            break
    return None


def branch_layouts(model: nn.Module, feats: list | tuple, input_hw: tuple[int, int]) -> list[FeatureLayout]:
    """Layouts of a list of (N, L, C) token sets, one per branch or scale (CrossViT, CoaT), each on its own
    patch grid. Stricter than :func:`feature_layout`: each set must be the grid of an integer stride."""
    name = _model_name(model)
    given = getattr(model, 'num_prefix_tokens', None)
    layouts = []
    for i, f in enumerate(feats):
        if not isinstance(f, torch.Tensor) or f.ndim != 3:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(
                f'CAM needs token sets (N, L, C), but item {i} of the list forward_features of model '
                f'{name!r} returned is {shape}'
            )
        found = None
        for prefix in [given] if isinstance(given, int) else [0, 1, 2]:
            grid = _stride_grid(int(f.shape[1]) - prefix, input_hw)
            if grid is not None:
                found = FeatureLayout('NLC', grid, prefix)
                break
        if found is None:
            raise ValueError(
                f'CAM needs patch tokens, but item {i} of the list forward_features of model {name!r} '
                f'returned, shape {tuple(f.shape)}, fits no patch grid of a {input_hw} input (not patch '
                f'tokens: e.g. hidden states)'
            )
        layouts.append(found)
    return layouts


def _finest(layouts: list[FeatureLayout]) -> tuple[int, int]:
    return max((layout.grid for layout in layouts), key=lambda g: g[0] * g[1])


def combine_branch_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum of per-branch (N, T, h_b, w_b) maps, each resized (bilinear) to the finest branch grid."""
    if len(maps) == 1:
        return maps[0]
    grid = max((tuple(m.shape[-2:]) for m in maps), key=lambda g: g[0] * g[1])
    total = None
    for m in maps:
        if tuple(m.shape[-2:]) != grid:
            m = F.interpolate(m, size=grid, mode='bilinear', align_corners=False)
        total = m if total is None else total + m
    return total


def dense_head_branches(
    model: nn.Module,
    feats: list,
    layouts: list[FeatureLayout],
    classes: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """The head applied per cell of each branch: (N, T, h, w) scores on the finest branch grid.

    Branch b's contribution at a cell is ``forward_head`` with branch b set to that cell (as in
    :func:`dense_head_logits`) and every other branch all-zero, minus ``forward_head`` with every branch
    all-zero (the baseline: the biases). The contributions, resized to the finest grid, are summed and the
    baseline added. Where the head is additive over branches and linear in each (CrossViT: the mean of one
    linear head per branch; CoaT: a linear aggregation of the branches, then a linear head) this is the
    per-cell head of every branch at once; the class token read instead of a mean keeps it approximate,
    as for ViT. Runs without gradients."""
    zeros = [
        f.new_zeros(1, layout.num_prefix_tokens + 1, f.shape[-1])
        for f, layout in zip(feats, layouts, strict=True)
    ]
    base = model.forward_head(list(zeros)).flatten(1).float()  # (1, K)
    n, k = feats[0].shape[0], base.shape[1]
    if classes is None:
        classes = torch.arange(k, device=base.device).expand(n, k)
    maps = []
    for b, (f, layout) in enumerate(zip(feats, layouts, strict=True)):
        h, w = layout.grid
        cells = _cells(f, layout)
        outs = []
        for start in range(0, cells.shape[0], chunk):
            x = _cells_as_head_input(cells[start : start + chunk], layout).contiguous()
            inputs = [x if i == b else z.expand(x.shape[0], -1, -1).contiguous() for i, z in enumerate(zeros)]
            outs.append(model.forward_head(inputs).flatten(1).float() - base)
        dense = torch.cat(outs).reshape(n, h * w, k).transpose(1, 2)
        maps.append(dense.gather(1, classes[..., None].expand(-1, -1, h * w)).reshape(n, -1, h, w))
    return combine_branch_maps(maps) + base[0][classes][..., None, None]


def pooled_tokens(layout: FeatureLayout) -> bool:
    """Whether token features have no patch grid, only pooled tokens (PiT returns its class token(s))."""
    return layout.kind == 'NLC' and layout.grid == (1, 1)


# Family rule (PiT): forward_features returns only its class token(s), after ``model.norm``. The patch
# tokens are then the last block's output, and the head applied per cell is that same norm followed by
# forward_head, exactly as a ViT's per-token head (ViT's forward_features ends with the same norm).
_POOLED_TOKEN_NORM = 'norm'


def _deepest_last_block(model: nn.Module) -> nn.Module | None:
    """The last element of the last non-empty ``*blocks`` container (PiT: ``transformers[-1].blocks[-1]``;
    CoaT: ``parallel_blocks[-1]``), for models without a top-level ``blocks``."""
    found = None
    for name, mod in model.named_modules():
        if (
            name.split('.')[-1].endswith('blocks')
            and isinstance(mod, (nn.Sequential, nn.ModuleList))
            and len(mod)
        ):
            found = mod[-1]
    return found


def pooled_token_source(
    model: nn.Module, images: torch.Tensor, num_pooled: int
) -> tuple[torch.Tensor, FeatureLayout] | None:
    """For pooled-token models (PiT): the last block's output tokens through ``model.norm`` and their
    layout (the first ``num_pooled`` tokens are the class tokens), from one more forward; None if the
    model has no blocks to read."""
    block = _deepest_last_block(model)
    if block is None:
        return None
    out: list = []
    handle = block.register_forward_hook(lambda mod, args, output: out.append(output))
    try:
        model.forward_features(images)
    finally:
        handle.remove()
    tokens = out[-1] if out else None
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[1] <= num_pooled:
        return None
    norm = getattr(model, _POOLED_TOKEN_NORM, None)
    if isinstance(norm, nn.Module):
        tokens = norm(tokens)
    grid = _token_grid(int(tokens.shape[1]) - num_pooled, tuple(images.shape[-2:]))
    return tokens, FeatureLayout('NLC', grid, num_pooled)


# ----------------------------------------------------------------------------------------------------
# gradients


def _last_block(model: nn.Module) -> nn.Module | None:
    """The last transformer block (``model.blocks[-1]``), where Grad-CAM reads class-token models."""
    blocks = getattr(model, 'blocks', None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        return blocks[-1]
    return None


@dataclass
class ClassGradients:
    """What Grad-CAM needs from one forward/backward: the maps it weights and the class-score gradients.

    One entry per branch in ``fmaps`` / ``layouts`` (one for single-map models; one per branch or scale
    for CrossViT and CoaT)."""

    logits: torch.Tensor  # (N, K), without a graph
    classes: torch.Tensor  # (N, T) the classes differentiated
    fmaps: list[torch.Tensor]  # the feature maps, each in its layout
    layouts: list[FeatureLayout]
    grads: list[list[torch.Tensor]]  # grads[t][b]: shaped like fmaps[b]


def _layouts(model: nn.Module, feats, input_hw: tuple[int, int]) -> list[FeatureLayout]:
    if isinstance(feats, (list, tuple)):
        return branch_layouts(model, feats, input_hw)
    return [feature_layout(model, feats, input_hw)]


def _has_grid_gradient(res: ClassGradients) -> bool:
    """Whether some class score reaches some patch cell (not so for a class-token head on final tokens)."""
    if any(pooled_tokens(layout) for layout in res.layouts):
        return False
    return any(
        bool(to_grid(g, layout).abs().sum() > 0)
        for gs in res.grads
        for g, layout in zip(gs, res.layouts, strict=True)
    )


def _captured_layouts(
    model: nn.Module, captured: list[torch.Tensor], layouts: list[FeatureLayout], input_hw: tuple[int, int]
) -> tuple[list[torch.Tensor], list[FeatureLayout]]:
    """The block inputs that are token sets on a patch grid, with their layouts."""
    single = layouts[0] if len(layouts) == 1 and not pooled_tokens(layouts[0]) else None
    tokens, found = [], []
    for t in captured:
        if t.ndim != 3:
            continue
        if single is not None:  # the same grid as the features, after the prefix tokens
            n_patch = single.grid[0] * single.grid[1]
            if single.kind == 'NLC' and t.shape[1] >= n_patch:
                return [t], [FeatureLayout('NLC', single.grid, int(t.shape[1]) - n_patch)]
            continue
        if len(layouts) == 1:  # pooled class tokens (PiT): they lead the block's tokens
            prefix = int(layouts[0].num_prefix_tokens or 0) + int(layouts[0].grid[0] * layouts[0].grid[1])
            if t.shape[1] > prefix:
                tokens.append(t)
                found.append(FeatureLayout('NLC', _token_grid(int(t.shape[1]) - prefix, input_hw), prefix))
            continue
        try:
            found.extend(branch_layouts(model, [t], input_hw))
            tokens.append(t)
        except ValueError:
            continue
    return tokens, found


def _gradients_at(
    model: nn.Module,
    images: torch.Tensor,
    pick_classes: Callable[[torch.Tensor], torch.Tensor],
    block: nn.Module | None,
) -> ClassGradients:
    """One forward with the graph starting at ``block``'s input (or at the features), then the gradients."""
    captured: list[torch.Tensor] = []

    def detached(arg):
        if isinstance(arg, (list, tuple)):  # CrossViT's blocks take the list of branch tokens
            return type(arg)(detached(a) for a in arg)
        if isinstance(arg, torch.Tensor) and arg.is_floating_point():
            arg = arg.detach().clone().requires_grad_(True)  # clone: a normal tensor even in inference mode
            captured.append(arg)
        return arg

    def start_graph(module, args):
        captured.clear()
        out = tuple(detached(a) for a in args)  # every tensor input (TNT: inner and outer tokens)
        if captured:
            torch.set_grad_enabled(True)  # undone when the surrounding no_grad block exits
        return out

    input_hw = tuple(images.shape[-2:])
    handle = block.register_forward_pre_hook(start_graph) if block is not None else None
    try:
        with torch.inference_mode(False), torch.no_grad():
            feats = model.forward_features(images)
            layouts = _layouts(model, feats, input_hw)  # also refuses what is no feature map
            branches = list(feats) if isinstance(feats, (list, tuple)) else [feats]
            if not any(f.requires_grad for f in branches):  # the block was not on the way: start here
                branches = [f.detach().clone().requires_grad_(True) for f in branches]
                feats = branches if isinstance(feats, (list, tuple)) else branches[0]
                captured.clear()
                torch.set_grad_enabled(True)
            logits = model.forward_head(feats)
            classes = pick_classes(logits.detach())
            tokens, token_layouts = _captured_layouts(model, captured, layouts, input_hw)
            keep = bool(tokens) and all(layout.kind == 'NLC' for layout in layouts)
            res = ClassGradients(
                logits, classes, branches, layouts, _scores_gradients(logits, branches, classes, keep)
            )
            if keep and not _has_grid_gradient(res):
                grads = _scores_gradients(logits, tokens, classes, False)
                used = [i for i in range(len(tokens)) if any(bool(g[i].abs().sum() > 0) for g in grads)]
                used = used or list(range(len(tokens)))  # a block input the score does not reach: no map
                res = ClassGradients(
                    logits,
                    classes,
                    [tokens[i] for i in used],
                    [token_layouts[i] for i in used],
                    [[g[i] for i in used] for g in grads],
                )
    finally:
        if handle is not None:
            handle.remove()
    res.logits = res.logits.detach()
    res.fmaps = [f.detach() for f in res.fmaps]
    return res


def class_score_gradients(
    model: nn.Module, images: torch.Tensor, pick_classes: Callable[[torch.Tensor], torch.Tensor]
) -> ClassGradients:
    """One forward, then the gradients of the class scores ``pick_classes(logits)`` (N, T) on the features.

    The map is ``forward_features``' output (each branch's, for multi-branch models). When the head reads a
    class token, no gradient reaches the patch tokens there; the map is then the input of the last block
    (``model.blocks[-1]``), whose attention carries the class score back to the patches. Models without a
    top-level ``blocks`` whose features give no patch map (PiT returns only its class token; CoaT's head
    reads class tokens) are run once more with the graph starting at the last block found in a ``*blocks``
    container. The graph starts at that block (or at the features): nothing before it is recorded.
    Parameters get no ``.grad``; a caller's no_grad or inference mode is overridden locally.
    """
    block = _last_block(model)
    res = _gradients_at(model, images, pick_classes, block)
    if block is None and not _has_grid_gradient(res):
        deeper = _deepest_last_block(model)
        if deeper is not None:
            again = _gradients_at(model, images, pick_classes, deeper)
            if _has_grid_gradient(again):
                return again
    return res


def _scores_gradients(
    scores: torch.Tensor, targets: list[torch.Tensor], classes: torch.Tensor, keep_graph: bool
) -> list[list[torch.Tensor]]:
    """d scores[n, classes[n, t]] / d target for every t and target (images are independent in eval mode)."""
    grads = []
    for t in range(classes.shape[1]):
        picked = scores.gather(1, classes[:, t : t + 1]).sum()
        retain = keep_graph or t < classes.shape[1] - 1
        found = torch.autograd.grad(picked, targets, retain_graph=retain, allow_unused=True)
        grads.append([torch.zeros_like(x) if g is None else g for g, x in zip(found, targets, strict=True)])
    return grads
