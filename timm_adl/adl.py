"""The Attention-based Dropout Layer (Choe & Shim, CVPR 2019).

The operation follows both reference implementations (junsukchoe/ADL ``ops.py`` and
clovaai/wsolevaluation ``wsol/method/adl.py``) exactly; the only change is that the random choice is
drawn on the input's device, so training needs no host-device sync and compiles without graph breaks.
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_module
from torch import nn

__all__ = ['ADL', 'adl_maps']


def _check_settings(drop_rate: float, gamma: float) -> None:
    if not 0.0 <= float(drop_rate) <= 1.0:
        raise ValueError(f'ADL drop_rate must be in [0, 1], got {drop_rate!r}')
    if not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f'ADL gamma must be in (0, 1], got {gamma!r}')


def adl_maps(x: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(drop_mask, importance_map)``, each (N, 1, H, W), for a feature map (N, C, H, W).

    Exposed on its own so diagnostics (e.g. "accuracy with the drop mask forced on") use the very same maps.
    """
    attention = x.mean(dim=1, keepdim=True)
    peak = attention.amax(dim=(1, 2, 3), keepdim=True)
    # Both references keep strictly-below-threshold cells: the peak itself is always dropped.
    drop_mask = (attention < peak * gamma).to(x.dtype)
    importance_map = torch.sigmoid(attention)
    return drop_mask, importance_map


@register_notrace_module  # keep the train/eval branch out of any FX trace of a model holding ADL
class ADL(nn.Module):
    """Attention-based Dropout Layer: parameter-free, active in training only, identity in eval.

    Args:
        drop_rate: probability that a step multiplies the features by the drop mask instead of the
            importance map (the paper's 0.75).
        gamma: drop threshold as a fraction of the per-sample attention peak (paper: 0.8 VGG16-GAP and
            InceptionV3, 0.9 ResNet50-SE, 0.95 MobileNetV1).
        per_sample: draw the drop/importance choice per image instead of once per forward for the whole
            batch. Not the paper's behaviour: it mixes both maps inside every batch, which lowers the
            variance of each step (and of BatchNorm statistics downstream) but means no step ever sees a
            batch where all the most discriminative parts are hidden at once.

    One draw per forward per layer, for the whole batch, as both references do; the draw uses torch's
    generator of the input's device, so ``torch.manual_seed`` makes it reproducible.
    """

    def __init__(self, drop_rate: float = 0.75, gamma: float = 0.9, per_sample: bool = False) -> None:
        super().__init__()
        _check_settings(drop_rate, gamma)
        self.drop_rate = float(drop_rate)
        self.gamma = float(gamma)
        self.per_sample = bool(per_sample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f'ADL expects a 4-D feature map (N, C, H, W), got shape {tuple(x.shape)}')
        if not self.training:
            return x
        drop_mask, importance_map = adl_maps(x, self.gamma)
        draw_shape = (x.shape[0], 1, 1, 1) if self.per_sample else ()
        # floor(U[0, 1) + drop_rate) is 1 with probability drop_rate: the references' exact formula, so the
        # same uniform draw picks the same branch here as there.
        use_drop = torch.floor(torch.rand(draw_shape, device=x.device) + self.drop_rate) > 0
        return x * torch.where(use_drop, drop_mask, importance_map)

    def extra_repr(self) -> str:
        text = f'drop_rate={self.drop_rate}, gamma={self.gamma}'
        return text + ', per_sample=True' if self.per_sample else text
