"""The Attention-based Dropout Layer (Choe & Shim, CVPR 2019).

The operation follows both reference implementations (junsukchoe/ADL ``ops.py`` and
clovaai/wsolevaluation ``wsol/method/adl.py``) exactly; the only change is that the random choice is
drawn on the input's device, so training needs no host-device sync and compiles without graph breaks.

The paper defines ADL on (N, C, H, W) maps. The same operation runs on the other layouts timm models use
between their layers, with the channel axis and the spatial positions read where that layout keeps them:
``'NHWC'`` (Swin, MambaOut stages) and ``'NLC'`` token sequences whose last tokens form a spatial grid
(ViT, DeiT, EVA patch tokens after ``num_prefix_tokens`` class / register tokens, which pass unchanged).
On the same values, permuted, every layout gives exactly the (N, C, H, W) result.
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_module
from torch import nn

__all__ = ['ADL', 'LAYOUTS', 'adl_maps']

LAYOUTS = ('NCHW', 'NHWC', 'NLC')
_CHANNEL_DIM = {'NCHW': 1, 'NHWC': 3, 'NLC': 2}


def _check_settings(
    drop_rate: float,
    gamma: float,
    layout: str = 'NCHW',
    num_prefix_tokens: int = 0,
    use_drop: bool = True,
    use_importance: bool = True,
) -> None:
    if not 0.0 <= float(drop_rate) <= 1.0:
        raise ValueError(f'ADL drop_rate must be in [0, 1], got {drop_rate!r}')
    if not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f'ADL gamma must be in (0, 1], got {gamma!r}')
    if layout not in LAYOUTS:
        raise ValueError(f'ADL layout must be one of {LAYOUTS}, got {layout!r}')
    if int(num_prefix_tokens) != num_prefix_tokens or num_prefix_tokens < 0:
        raise ValueError(f'ADL num_prefix_tokens must be a non-negative int, got {num_prefix_tokens!r}')
    if num_prefix_tokens and layout != 'NLC':
        raise ValueError(f"ADL num_prefix_tokens needs layout='NLC', got layout={layout!r}")
    if not use_drop and not use_importance:
        raise ValueError('ADL needs use_drop or use_importance (or both) True, got both False')


def adl_maps(x: torch.Tensor, gamma: float, channel_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(drop_mask, importance_map)`` for a feature map, each with ``x``'s shape but 1 channel.

    ``channel_dim`` 1 for (N, C, H, W) (the default), -1 for (N, H, W, C) or (N, L, C) grid tokens. Exposed
    on its own so diagnostics (e.g. "accuracy with the drop mask forced on") use the very same maps.
    """
    attention = x.mean(dim=channel_dim, keepdim=True)
    peak = attention.flatten(1).amax(dim=1)
    peak = peak.reshape([x.shape[0]] + [1] * (x.dim() - 1))
    # Both references keep strictly-below-threshold cells: the peak is dropped whenever it is positive (an
    # all-negative map puts gamma * peak above the peak, and nothing is dropped).
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
        layout: ``'NCHW'`` (the paper's), ``'NHWC'`` channels-last maps, or ``'NLC'`` tokens on a grid.
        num_prefix_tokens: with ``'NLC'``, leading class / register tokens: never dropped, passed unchanged,
            and left out of the attention peak.
        use_drop: multiply by the drop mask when the draw picks the drop branch; ``False`` makes that
            branch the identity (the paper's Table 1 "importance map only" row).
        use_importance: multiply by the importance map when the draw picks the importance branch;
            ``False`` makes that branch the identity (Table 1's "drop mask only" row). The draw itself is
            the same in every mode, so switching a component off never shifts the random stream.

    One draw per forward per layer, for the whole batch, as both references do; the draw uses torch's
    generator of the input's device, so ``torch.manual_seed`` makes it reproducible.
    """

    def __init__(
        self,
        drop_rate: float = 0.75,
        gamma: float = 0.9,
        per_sample: bool = False,
        layout: str = 'NCHW',
        num_prefix_tokens: int = 0,
        use_drop: bool = True,
        use_importance: bool = True,
    ) -> None:
        super().__init__()
        _check_settings(drop_rate, gamma, layout, num_prefix_tokens, use_drop, use_importance)
        self.drop_rate = float(drop_rate)
        self.gamma = float(gamma)
        self.per_sample = bool(per_sample)
        self.layout = str(layout)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.use_drop = bool(use_drop)
        self.use_importance = bool(use_importance)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = 3 if self.layout == 'NLC' else 4
        if x.dim() != expected:
            # no f-string: TorchScript compiles this error path
            shape = '(' + ', '.join([str(d) for d in x.shape]) + ')'
            axes = {'NCHW': '(N, C, H, W)', 'NHWC': '(N, H, W, C)', 'NLC': '(N, L, C)'}[self.layout]
            raise ValueError(
                'ADL expects a ' + str(expected) + '-D feature map ' + axes + ', got shape ' + shape
            )
        if not self.training:
            return x
        if self.num_prefix_tokens > 0:
            prefix, grid = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
            return torch.cat([prefix, self._drop_or_weigh(grid)], dim=1)
        return self._drop_or_weigh(x)

    def _drop_or_weigh(self, x: torch.Tensor) -> torch.Tensor:
        channel_dim = 1 if self.layout == 'NCHW' else -1
        drop_mask, importance_map = adl_maps(x, self.gamma, channel_dim)
        draw_shape: list[int] = []
        if self.per_sample:
            draw_shape = [x.shape[0]] + [1] * (x.dim() - 1)
        # floor(U[0, 1) + drop_rate) is 1 with probability drop_rate: the references' exact formula, so the
        # same uniform draw picks the same branch here as there.
        drop_drawn = torch.floor(torch.rand(draw_shape, device=x.device) + self.drop_rate) > 0
        if not self.use_drop:  # Table 1 "importance map only": a drop draw leaves x as it is
            drop_mask = torch.ones_like(drop_mask)
        if not self.use_importance:  # Table 1 "drop mask only": an importance draw leaves x as it is
            importance_map = torch.ones_like(importance_map)
        return x * torch.where(drop_drawn, drop_mask, importance_map)

    def extra_repr(self) -> str:
        text = f'drop_rate={self.drop_rate}, gamma={self.gamma}'
        if self.per_sample:
            text += ', per_sample=True'
        if self.layout != 'NCHW':
            text += f', layout={self.layout!r}'
        if self.num_prefix_tokens:
            text += f', num_prefix_tokens={self.num_prefix_tokens}'
        if not self.use_drop:
            text += ', use_drop=False'
        if not self.use_importance:
            text += ', use_importance=False'
        return text
