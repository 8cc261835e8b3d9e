"""The SPG-style InceptionV3 for WSOL (as clovaai/wsolevaluation ``wsol/inception.py`` builds it) and its
ADL twin, made of timm's own InceptionV3 blocks so timm's ImageNet weights load into every shared tensor.

Differences from timm's ``inception_v3``, all taken from wsolevaluation's trunk (they change no weight shape):
- ``Conv2d_1a_3x3`` has padding 1, and ``Pool1``/``Pool2`` pad by 1 with ceil mode;
- a 3x3/2 max-pool (``Pool3``) follows ``Mixed_5d``, and ``Mixed_6a`` runs at stride 1 ('same' padding) instead,
  so the stride-16 map of 224x224 input is 14x14 (timm's strides would give 12x12);
- ``Mixed_7a``-``Mixed_7c`` and ``AuxLogits`` are dropped; two new conv3x3 + ReLU layers with 1024 channels
  (``SPG_A3_1b``, ``SPG_A3_2b``, wsolevaluation's names) end the trunk.
"""

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct, create_classifier, get_device_dtype
from timm.models import generate_default_cfgs, register_model
from timm.models.inception_v3 import InceptionA, InceptionB, InceptionC
from torch import nn

from ._checkpoints import explain_hub_errors, wsol_pretrained_cfgs
from ._wsol_common import AdlAfter, base_cfg, build_wsol_model, shared_weights_filter

__all__ = ['InceptionV3Wsol']

# wsolevaluation's InceptionAdl placement: after Mixed_5d (before the extra max-pool), after Mixed_6e and
# after the second extra conv (SPG_A3_2b), i.e. on the final map.
_ADL_AFTER = ('Mixed_5d', 'Mixed_6e', 'SPG_A3_2b')

# The trunk's blocks after the stem, in forward order (parameter groups for layer-wise lr decay).
_BLOCKS = (
    *(f'Mixed_5{c}' for c in 'bcd'),
    *(f'Mixed_6{c}' for c in 'abcde'),
    'SPG_A3_1b',
    'SPG_A3_2b',
)


class InceptionBStride1(InceptionB):
    """timm's InceptionB (``Mixed_6a``) at stride 1 with 'same' padding in all three branches.

    The stride moves to the max-pool in front of it (``InceptionV3Wsol.Pool3``), as in wsolevaluation.
    """

    def __init__(
        self,
        in_channels: int,
        conv_block: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, conv_block=conv_block, device=device, dtype=dtype)
        for conv in (self.branch3x3.conv, self.branch3x3dbl_3.conv):
            conv.stride, conv.padding = (1, 1), (1, 1)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return [branch3x3, branch3x3dbl, branch_pool]


class InceptionV3Wsol(nn.Module):
    """InceptionV3 trunk up to ``Mixed_6e`` (stride 16), two 1024-channel convs, GAP and a linear classifier.

    wsolevaluation ends in a 1x1 conv (``SPG_A4``, num_classes channels) followed by GAP, and reads the CAM
    from that conv's class channel. A 1x1 conv followed by GAP equals GAP followed by a linear layer with the
    same weights, so the logits here are the same function; the CAM ``sum_c fc.weight[k, c] * F[c]``
    (+ bias) equals SPG_A4's channel k, and ``mean_c`` (what the other models use) differs from it only by
    a scale and an offset, which the per-image min-max normalisation of CAMs removes.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = 'avg',
        drop_rate: float = 0.0,
        num_features: int = 1024,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}  # timm's factory kwargs: create_model(device='meta') etc.
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        # timm's inception conv block: conv (no bias) + BN (eps 1e-3) + ReLU, padding 0 unless given.
        conv_block = partial(
            ConvNormAct,
            padding=0,
            norm_layer='batchnorm2d',
            act_layer='relu',
            norm_kwargs=dict(eps=1e-3),
            act_kwargs=dict(inplace=True),
        )
        self.Conv2d_1a_3x3 = conv_block(in_chans, 32, kernel_size=3, stride=2, padding=1, **dd)
        self.Conv2d_2a_3x3 = conv_block(32, 32, kernel_size=3, **dd)
        self.Conv2d_2b_3x3 = conv_block(32, 64, kernel_size=3, padding=1, **dd)
        self.Pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.Conv2d_3b_1x1 = conv_block(64, 80, kernel_size=1, **dd)
        self.Conv2d_4a_3x3 = conv_block(80, 192, kernel_size=3, **dd)
        self.Pool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.Mixed_5b = InceptionA(192, pool_features=32, conv_block=conv_block, **dd)
        self.Mixed_5c = InceptionA(256, pool_features=64, conv_block=conv_block, **dd)
        self.Mixed_5d = InceptionA(288, pool_features=64, conv_block=conv_block, **dd)
        self.Pool3 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.Mixed_6a = InceptionBStride1(288, conv_block=conv_block, **dd)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, conv_block=conv_block, **dd)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, conv_block=conv_block, **dd)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, conv_block=conv_block, **dd)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, conv_block=conv_block, **dd)
        self.SPG_A3_1b = nn.Sequential(
            nn.Conv2d(768, num_features, 3, padding=1, **dd), nn.ReLU(inplace=True)
        )
        self.SPG_A3_2b = nn.Sequential(
            nn.Conv2d(num_features, num_features, 3, padding=1, **dd), nn.ReLU(inplace=True)
        )
        self.feature_info = [
            dict(num_chs=64, reduction=2, module='Conv2d_2b_3x3'),
            dict(num_chs=192, reduction=4, module='Conv2d_4a_3x3'),
            dict(num_chs=288, reduction=8, module='Mixed_5d'),
            dict(num_chs=768, reduction=16, module='Mixed_6e'),
            dict(num_chs=num_features, reduction=16, module='SPG_A3_2b'),
        ]

        self.num_features = num_features
        self.global_pool, self.head_drop, self.fc = create_classifier(
            num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd
        )
        self.head_hidden_size = num_features * self.global_pool.feat_mult()
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's InceptionV3 init for the shared trunk; Xavier (wsolevaluation's choice) for the new layers,
        # which have no norm layer to tame timm's std-0.1 init.
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if name.startswith(('SPG_', 'fc')):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        # timm turns regex groups into numbers, so the block letters (Mixed_5b) cannot be a group: each
        # block gets its ordinal instead (coarse: one group per stage: Mixed_5, Mixed_6, the SPG convs).
        if coarse:
            blocks = [(r'^Mixed_5', (0,)), (r'^Mixed_6', (1,)), (r'^SPG_A3', (2,))]
        else:
            blocks = [(rf'^{name}\.', (i,)) for i, name in enumerate(_BLOCKS)]
        return dict(stem=r'^Conv2d_[1234]', blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise ValueError('InceptionV3Wsol does not support gradient checkpointing')

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        # As timm's InceptionV3: the new head lands on the model's device and dtype, in the model's mode.
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **dd
        )
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Pool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.Pool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(self.Pool3(x))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        return self.SPG_A3_2b(self.SPG_A3_1b(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # Input 224, not the checkpoint's 299: WSOL trains and evaluates InceptionV3 at 224 (wsolevaluation, the
    # ADL paper), which gives the 14x14 map; the other data settings are the checkpoint's.
    return base_cfg(
        'inception_v3.tv_in1k',
        input_size=(3, 224, 224),
        pool_size=(14, 14),
        classifier='fc',
        description='SPG-style InceptionV3 (Mixed_6a at stride 1, no Mixed_7, 2 x conv 1024) + GAP + linear.',
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        'inception_v3_wsol.in1k_init': _cfg(),
        'inception_v3_adl.in1k_init': _cfg(),
        **wsol_pretrained_cfgs('inception_v3_wsol', _cfg()),
        **wsol_pretrained_cfgs('inception_v3_adl', _cfg()),
    }
)

# timm's inception_v3.tv_in1k holds Mixed_7a-7c, the auxiliary classifier and a 2048-wide fc: none exists
# here (our fc is 1024 wide), so they are dropped on purpose; SPG_A3_* and fc are new and keep their init.
_filter_fn = shared_weights_filter(drop=('Mixed_7', 'AuxLogits.', 'fc.'), new=('SPG_A3_', 'fc.'))


def _create(variant: str, pretrained: bool, **kwargs: Any) -> InceptionV3Wsol:
    return build_wsol_model(InceptionV3Wsol, variant, pretrained, pretrained_filter_fn=_filter_fn, **kwargs)


@register_model
@explain_hub_errors
def inception_v3_wsol(pretrained: bool = False, **kwargs: Any) -> InceptionV3Wsol:
    """The SPG-style InceptionV3 WSOL baseline (wsolevaluation's trunk, GAP + linear head)."""
    return _create('inception_v3_wsol', pretrained, **kwargs)


@register_model
@explain_hub_errors
def inception_v3_adl(
    pretrained: bool = False,
    adl_after: AdlAfter | None = None,
    adl_gamma: float = 0.8,
    adl_drop_rate: float = 0.75,
    **kwargs: Any,
) -> InceptionV3Wsol:
    """``inception_v3_wsol`` with ADL after Mixed_5d, Mixed_6e and SPG_A3_2b, gamma 0.8."""
    return _create(
        'inception_v3_adl',
        pretrained,
        adl_after=adl_after,
        adl_default_after=_ADL_AFTER,
        adl_gamma=adl_gamma,
        adl_drop_rate=adl_drop_rate,
        **kwargs,
    )
