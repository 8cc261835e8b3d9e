"""Shapes, layouts and strides of a traced model's tensors, read off meta-device shape propagation.

Two propagations with every tensor swapped for a ``meta`` tensor (no compute, no copy): one at the model's
input size, one at twice that size, so that dims that double are told apart from channels and token counts.
A tensor is a *grid map* when its positions form the input image's grid at some stride: ``'NCHW'`` (the
paper's feature maps), ``'NHWC'`` (channels-last stages: Swin, MambaOut) or ``'NLC'`` (tokens, after
``num_prefix_tokens`` class / register tokens: ViT, DeiT, EVA).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

__all__ = ['default_input_size', 'eval_mode', 'is_tensor_meta', 'propagate_twice']

_NORM_MODULES = (
    'torch.nn.modules.batchnorm', 'torch.nn.modules.normalization', 'torch.nn.modules.instancenorm',
    'timm.layers.norm', 'timm.layers.norm_act',
)  # fmt: skip


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """The pretrained cfg's input size; a patch embedding's own ``img_size`` wins (``img_size=32`` given to
    a ViT made for 224 leaves the cfg at 224, and a fixed-size model accepts only its own size)."""
    cfg = getattr(model, 'pretrained_cfg', None) or getattr(model, 'default_cfg', None) or {}
    size = cfg.get('input_size') if isinstance(cfg, dict) else None
    size = tuple(size) if size and len(size) == 3 else (3, 224, 224)
    embed_size = getattr(getattr(model, 'patch_embed', None), 'img_size', None)
    if isinstance(embed_size, tuple) and len(embed_size) == 2 and all(isinstance(v, int) for v in embed_size):
        size = (size[0], *embed_size)
    return size


def _is_norm_module(module: nn.Module) -> bool:
    kind = type(module)
    return kind.__module__.startswith(_NORM_MODULES) or (
        'Norm' in kind.__name__ and next(module.children(), None) is None
    )


def is_tensor_meta(node: fx.Node) -> bool:
    return isinstance(node.meta.get('tensor_meta'), TensorMetadata)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def propagate_twice(gm: fx.GraphModule, input_size: tuple[int, ...], meta: bool) -> dict | None:
    """Shapes at twice the input size (None if the model refuses it), then ``tensor_meta`` at the size."""
    c, h, w = input_size
    doubled = None
    try:  # a second probe at twice the size tells spatial dims from channels and tokens
        _propagate(gm, (c, 2 * h, 2 * w), meta)
        doubled = {n: tuple(n.meta['tensor_meta'].shape) for n in gm.graph.nodes if is_tensor_meta(n)}
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
    if doubled is not None and _only_input_grew(gm, doubled):
        doubled = None  # the model resizes its input first (CrossViT): the second probe says nothing
    return doubled


def _only_input_grew(gm: fx.GraphModule, doubled: dict) -> bool:
    """True when no node but the inputs changed shape at twice the size."""
    for n in gm.graph.nodes:
        if (
            n.op != 'placeholder'
            and is_tensor_meta(n)
            and doubled.get(n) != tuple(n.meta['tensor_meta'].shape)
        ):
            return False
    return True


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


# -- layouts -------------------------------------------------------------------------------------------
_MAX_PREFIX_TOKENS = 64  # class, distillation and register tokens before the grid


def is_nchw_map(shape: tuple[int, ...], big: tuple[int, ...] | None, input_size: tuple[int, ...]) -> bool:
    """An (N, C, H, W) output with more than one pixel.

    ``big``: its shape at twice the input size (None when the model refuses that size). H and W must
    (roughly) double: this rejects NHWC tensors (C does not grow) and attention maps (N x N tokens grow
    fourfold). Without a second probe (models with a fixed input size), H/W must keep the input's aspect
    and be a power-of-two fraction of it.
    """
    if len(shape) != 4 or shape[2] * shape[3] <= 1 or shape[0] != 1:
        return False
    if big is not None and (len(big) != 4 or big[1] != shape[1]):
        return False
    return _is_grid(shape[2:], big[2:] if big is not None and len(big) == 4 else None, input_size, big)


def _is_grid(
    hw: tuple[int, ...], big_hw: tuple[int, ...] | None, input_size: tuple[int, ...], big: object
) -> bool:
    in_h, in_w = input_size[1:]
    if hw[0] > in_h or hw[1] > in_w:
        return False
    if big is not None:
        return big_hw is not None and all(1.6 <= b / s <= 2.7 for b, s in zip(big_hw, hw, strict=True))
    same_aspect = abs(math.log((hw[0] / hw[1]) / (in_h / in_w))) < 0.08
    octaves = math.log2(in_h / hw[0])
    return same_aspect and abs(octaves - round(octaves)) < 0.35


def grid_layout(
    shape: tuple[int, ...],
    big: tuple[int, ...] | None,
    input_size: tuple[int, ...],
    prefix_hint: int = 0,
) -> tuple[str, int, tuple[int, int]] | None:
    """``(layout, num_prefix_tokens, (grid_h, grid_w))`` of a tensor whose positions form a grid over the
    input, or None. ``prefix_hint``: the model's ``num_prefix_tokens``, tried first for token sequences."""
    if len(shape) == 4 and shape[0] == 1:
        if is_nchw_map(shape, big, input_size):
            return 'NCHW', 0, (shape[2], shape[3])
        channels_same = big is None or (len(big) == 4 and big[3] == shape[3])
        hw_big = big[1:3] if big is not None and len(big) == 4 else None
        if shape[1] * shape[2] > 1 and channels_same and _is_grid(shape[1:3], hw_big, input_size, big):
            return 'NHWC', 0, (shape[1], shape[2])
        return None
    if len(shape) != 3 or shape[0] != 1:
        return None
    length = shape[1]
    if big is not None:  # tokens on a grid grow fourfold at twice the size; prefix tokens do not
        if len(big) != 3 or big[2] != shape[2] or (4 * length - big[1]) % 3:
            return None
        prefixes = [(4 * length - big[1]) // 3]
    else:
        prefixes = list(dict.fromkeys([prefix_hint, *range(_MAX_PREFIX_TOKENS + 1)]))
    for prefix in prefixes:
        grid = _token_grid(length - prefix, input_size) if 0 <= prefix < length else None
        if grid is not None:
            return 'NLC', prefix, grid
    return None


def _token_grid(positions: int, input_size: tuple[int, ...]) -> tuple[int, int] | None:
    """The (H, W) grid of ``positions`` tokens over the input: an integer patch size that tiles it."""
    in_h, in_w = input_size[1:]
    for patch in range(2, in_h + 1):
        h, w = in_h // patch, in_w // patch
        if h * w == positions and h > 1:
            return h, w
        if h * w < positions:
            return None
    return None
