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

__all__ = [
    'ClassGradients',
    'FeatureLayout',
    'class_score_gradients',
    'classifier_weights',
    'dense_head_gap',
    'dense_head_logits',
    'feature_layout',
    'linear_classifier',
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


def check_timm_classifier(model: nn.Module) -> None:
    """A clear error for a module without timm's classifier interface, or for a headless one."""
    name = _model_name(model)
    missing = [m for m in _HEAD_METHODS if not hasattr(model, m)]
    if missing:
        raise ValueError(
            f'CAM needs a timm classifier with forward_features/forward_head/get_classifier; '
            f'model {name!r} has no {", ".join(missing)}'
        )
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
    missing = [m for m in _HEAD_METHODS if not hasattr(model, m)]
    if missing:
        raise ValueError(
            f'CAM needs a timm classifier with forward_features/forward_head/get_classifier; '
            f'model {name!r} has no {", ".join(missing)}'
        )
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
    ``num_prefix_tokens + 1`` copies of the cell (class-token, average and max pooling all return the cell)."""
    m, c = cells.shape
    if layout.kind == 'NCHW':
        return cells.reshape(m, c, 1, 1)
    if layout.kind == 'NHWC':
        return cells.reshape(m, 1, 1, c)
    return cells[:, None, :].expand(m, layout.num_prefix_tokens + 1, c).contiguous()


def _cells(feats: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    grid = to_grid(feats, layout)
    return grid.flatten(2).transpose(1, 2).reshape(-1, grid.shape[1])  # (N * h * w, C), row-major cells


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
        out = model.forward_head(x, pre_logits=True) if split else model.forward_head(x)
        outs.append(out.flatten(1).float())
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
        layout = feature_layout(model, feats, tuple(images.shape[-2:]))
        dense = dense_head_logits(model, feats, layout, logits)
    diff = (dense.mean((2, 3)) - logits).abs().max().item()
    return diff / max(logits.abs().max().item(), 1e-12)


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
    """What Grad-CAM needs from one forward/backward: the map it weights and the class-score gradients."""

    logits: torch.Tensor  # (N, K), without a graph
    classes: torch.Tensor  # (N, T) the classes differentiated
    fmap: torch.Tensor  # the feature map, in ``layout``
    layout: FeatureLayout
    grads: list[torch.Tensor]  # T tensors shaped like ``fmap``


def class_score_gradients(
    model: nn.Module, images: torch.Tensor, pick_classes: Callable[[torch.Tensor], torch.Tensor]
) -> ClassGradients:
    """One forward, then the gradients of the class scores ``pick_classes(logits)`` (N, T) on the features.

    The map is ``forward_features``' output. When the head reads a class token, no gradient reaches the
    patch tokens there; the map is then the input of the last block (``model.blocks[-1]``), whose
    attention carries the class score back to the patches. The graph starts at that block (or at the
    features): nothing before it is recorded. Parameters get no ``.grad``; a caller's no_grad or inference
    mode is overridden locally.
    """
    captured: list[torch.Tensor] = []

    def start_graph(module, args):
        captured.clear()
        out = []
        for arg in args:  # every tensor input (TNT's block takes inner and outer tokens)
            if isinstance(arg, torch.Tensor) and arg.is_floating_point():
                arg = (
                    arg.detach().clone().requires_grad_(True)
                )  # clone: a normal tensor even in inference mode
                captured.append(arg)
            out.append(arg)
        if captured:
            torch.set_grad_enabled(True)  # undone when the surrounding no_grad block exits
        return tuple(out)

    block = _last_block(model)
    handle = block.register_forward_pre_hook(start_graph) if block is not None else None
    try:
        with torch.inference_mode(False), torch.no_grad():
            feats = model.forward_features(images)
            layout = feature_layout(model, feats, tuple(images.shape[-2:]))  # also refuses non-tensors
            if not feats.requires_grad:  # the block was not on the way: start the graph at the features
                feats = feats.detach().clone().requires_grad_(True)
                captured.clear()
                torch.set_grad_enabled(True)
            logits = model.forward_head(feats)
            classes = pick_classes(logits.detach())
            n_patch = layout.grid[0] * layout.grid[1]
            tokens = [
                t for t in captured if t.ndim == 3 and t.shape[0] == feats.shape[0] and t.shape[1] >= n_patch
            ]
            keep = bool(tokens) and layout.kind == 'NLC'
            grads = _scores_gradients(logits, feats, classes, keep)
            if keep and all(to_grid(g, layout).abs().sum() == 0 for g in grads):
                x = tokens[0]
                layout = FeatureLayout('NLC', layout.grid, int(x.shape[1]) - n_patch)
                grads = _scores_gradients(logits, x, classes, False)
                feats = x
    finally:
        if handle is not None:
            handle.remove()
    return ClassGradients(logits.detach(), classes, feats.detach(), layout, grads)


def _scores_gradients(
    scores: torch.Tensor, target: torch.Tensor, classes: torch.Tensor, keep_graph: bool
) -> list[torch.Tensor]:
    """d scores[n, classes[n, t]] / d target for every t (images are independent in eval mode)."""
    grads = []
    for t in range(classes.shape[1]):
        picked = scores.gather(1, classes[:, t : t + 1]).sum()
        retain = keep_graph or t < classes.shape[1] - 1
        (g,) = torch.autograd.grad(picked, target, retain_graph=retain, allow_unused=True)
        grads.append(torch.zeros_like(target) if g is None else g)
    return grads
