"""Image transforms and box scaling of the WSOL protocol (wsolevaluation ``data_loaders.py``).

Evaluation squashes the whole image to ``img_size x img_size`` (no crop), so a box maps to the network
input by scaling its coordinates alone; training uses the references' ``Resize((256, 256))`` +
``RandomCrop(224)`` + horizontal flip, which timm's crop modes do not offer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform, resolve_model_data_config
from timm.data.transforms import MaybeToTensor, str_to_interp_mode
from torch import nn
from torchvision import transforms as T

__all__ = [
    'check_mean_std',
    'model_mean_std',
    'scale_boxes',
    'to_hw',
    'wsol_eval_transform',
    'wsol_train_transform',
]

# The references train at 224 after resizing to 256; other input sizes keep that ratio.
TRAIN_RESIZE_RATIO = 256 / 224


def to_hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``(224, 224)`` or ``(3, 224, 224)`` -> ``(height, width)``."""
    if isinstance(img_size, int):
        size = (img_size, img_size)
    else:
        size = tuple(int(s) for s in img_size)[-2:]
        if len(size) == 1:
            size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'img_size must be a positive int or (height, width), got {img_size!r}')
    return size


def wsol_eval_transform(
    img_size: int | Sequence[int] = 224,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    interpolation: str = 'bilinear',
) -> nn.Module:
    """Resize to exactly ``img_size`` with no crop, then normalise (timm's ``squash`` mode, crop_pct 1)."""
    return create_transform(
        to_hw(img_size),
        is_training=False,
        crop_pct=1.0,
        crop_mode='squash',
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
    )


def wsol_train_transform(
    img_size: int | Sequence[int] = 224,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    interpolation: str = 'bilinear',
    resize_size: int | Sequence[int] | None = None,
) -> nn.Module:
    """The references' training transform: squash to 256/224 of ``img_size``, random crop, h-flip.

    ``resize_size`` overrides the intermediate size (default ``round(img_size * 256 / 224)``).
    """
    h, w = to_hw(img_size)
    if resize_size is None:
        resize_hw = (round(h * TRAIN_RESIZE_RATIO), round(w * TRAIN_RESIZE_RATIO))
    else:
        resize_hw = to_hw(resize_size)
    if resize_hw[0] < h or resize_hw[1] < w:
        raise ValueError(f'resize_size {resize_hw} must be at least the crop size {(h, w)}')
    return T.Compose(
        [
            T.Resize(resize_hw, interpolation=str_to_interp_mode(interpolation)),
            T.RandomCrop((h, w)),
            T.RandomHorizontalFlip(),
            MaybeToTensor(),
            T.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)),
        ]
    )


def scale_boxes(
    boxes: Sequence[Sequence[float]], image_size: tuple[int, int], out_hw: tuple[int, int]
) -> torch.Tensor:
    """Map boxes from an ``image_size = (W, H)`` image to an ``out_hw = (H', W')`` squashed one.

    Exactly the reference's ``resize_bbox``: each coordinate times ``W'/W`` (or ``H'/H``) in double
    precision, multiplied before dividing, then truncated with ``int()``; returns a float32 (K, 4) tensor.
    """
    w, h = float(image_size[0]), float(image_size[1])
    out_h, out_w = float(out_hw[0]), float(out_hw[1])
    scaled = [
        (int(x0 * out_w / w), int(y0 * out_h / h), int(x1 * out_w / w), int(y1 * out_h / h))
        for x0, y0, x1, y1 in boxes
    ]
    return torch.tensor(scaled, dtype=torch.float32).reshape(-1, 4)


def check_mean_std(values: Any, name: str, positive: bool = False) -> tuple[float, float, float]:
    """Three finite RGB numbers (``positive`` for a std, which is divided by) as a float tuple.

    One check for every place a normalisation comes from (flags, checkpoint metadata, run configs), so a
    bad value is reported with its name wherever it was written. Raises ``ValueError``.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise ValueError(f'{name} needs 3 values (R G B), got {values!r}')
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f'{name}: {v!r} is not a number (expected 3 numbers R G B)') from None
        if isinstance(v, bool) or not math.isfinite(f):
            raise ValueError(f'{name}: {v!r} is not a finite number (expected 3 numbers R G B)')
        if positive and f <= 0:
            raise ValueError(f'{name}: {v!r} must be > 0 (a std divides the input)')
        out.append(f)
    return out[0], out[1], out[2]


def model_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation a timm model was pretrained with (its ``pretrained_cfg`` mean and std)."""
    cfg = resolve_model_data_config(model)
    return tuple(cfg['mean']), tuple(cfg['std'])
