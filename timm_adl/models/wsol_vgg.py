"""VGG16-GAP (the CAM paper's VGG for localisation) and its ADL twin.

timm's VGG16 conv layers (same ``features.N`` keys, so timm's ImageNet weights load), without pool5 and
without the 7x7 "fc6"/"fc7" ConvMlp and the 4096-wide classifier; instead one extra conv3x3 with 1024
channels + ReLU, global average pooling and a linear classifier: a 14x14 CAM at 224x224, as in the CAM
paper, the ADL paper and clovaai/wsolevaluation (``VggCam``).
"""

from typing import Any

import torch
from timm.layers import ClassifierHead, get_device_dtype
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ._checkpoints import explain_hub_errors, wsol_pretrained_cfgs
from ._wsol_common import AdlAfter, base_cfg, build_wsol_model, shared_weights_filter

__all__ = ['VggGap']

# timm's vgg16 layout minus the last 'M' (pool5). Each int is conv3x3 + ReLU, 'M' a 2x2 max-pool, so
# pool3 = features.16, pool4 = features.23 and conv5_3's ReLU = features.29, exactly as in timm's vgg16.
_VGG16_NO_POOL5 = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)

# The paper's best VGG placement (Table 2: conv5_3 + pool4 + pool3; the author's setting "attdrop 3 4 53"
# in junsukchoe/ADL): after pool3, after pool4 and after conv5_3 (its ReLU), i.e. before the extra conv.
# clovaai/wsolevaluation differs in one place: its middle ADL sits after conv4_3, *before* pool4. We follow
# the paper; pass adl_after=['features.16', 'features.22', 'features.29'] for wsolevaluation's variant.
_ADL_AFTER = ('features.16', 'features.23', 'features.29')


class VggGap(nn.Module):
    """VGG16 without pool5 and the FC layers, plus conv6 (3x3, 1024) + ReLU, GAP and a linear classifier.

    ``forward_features`` returns conv6's ReLU output (N, 1024, H/16, W/16); the CAM of class k is
    ``sum_c head.fc.weight[k, c] * F[c]`` (up to a scale), the same map for ``get_classifier()``.
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
        self.feature_info: list[dict[str, Any]] = []

        layers: list[nn.Module] = []
        prev_chs, stride = in_chans, 1
        for v in _VGG16_NO_POOL5:
            if v == 'M':
                # Same taps as timm's VGG: the ReLU before each pool.
                self.feature_info.append(
                    dict(num_chs=prev_chs, reduction=stride, module=f'features.{len(layers) - 1}')
                )
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                stride *= 2
            else:
                layers += [nn.Conv2d(prev_chs, int(v), kernel_size=3, padding=1, **dd), nn.ReLU(inplace=True)]
                prev_chs = int(v)
        self.features = nn.Sequential(*layers)
        self.feature_info.append(
            dict(num_chs=prev_chs, reduction=stride, module=f'features.{len(layers) - 1}')
        )

        # The CAM paper's extra layer ("conv6" in wsolevaluation, "new" in junsukchoe/ADL): no norm layer.
        self.conv6 = nn.Conv2d(prev_chs, num_features, kernel_size=3, padding=1, **dd)
        self.act6 = nn.ReLU(inplace=True)
        self.feature_info.append(dict(num_chs=num_features, reduction=stride, module='act6'))

        self.num_features = self.head_hidden_size = num_features
        self.head = ClassifierHead(
            num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's VGG init (He for convs, N(0, 0.01) for linear); the backbone is replaced by
        # pretrained weights in the usual case, conv6 and the classifier keep this init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r'^features\.0', blocks=[(r'^features\.(\d+)', None), (r'^conv6', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise ValueError('VggGap does not support gradient checkpointing')

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        # A new classifier lands on the model's device and dtype, whatever happened to the old one.
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, **dd)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.act6(self.conv6(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        'vgg16.tv_in1k',
        pool_size=(14, 14),
        classifier='head.fc',
        description='VGG16-GAP (no pool5/FC; conv6 1024 + GAP + linear), 14x14 CAM at 224.',
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        'vgg16_gap.in1k_init': _cfg(),
        'vgg16_gap_adl.in1k_init': _cfg(),
        **wsol_pretrained_cfgs('vgg16_gap', _cfg()),
        **wsol_pretrained_cfgs('vgg16_gap_adl', _cfg()),
    }
)

# timm's vgg16 checkpoint holds the ConvMlp "fc6/fc7" (pre_logits.*) and a 4096-wide classifier (head.fc.*):
# neither exists here (ours is 1024 wide), so both are dropped on purpose; conv6 and the classifier are new
# layers and keep their fresh init. Every features.* tensor must load (timm's strict load checks it).
_filter_fn = shared_weights_filter(drop=('pre_logits.', 'head.fc.'), new=('conv6.', 'head.fc.'))


def _create(variant: str, pretrained: bool, **kwargs: Any) -> VggGap:
    return build_wsol_model(
        VggGap,
        variant,
        pretrained,
        pretrained_filter_fn=_filter_fn,
        feature_cfg=dict(flatten_sequential=True),
        **kwargs,
    )


@register_model
@explain_hub_errors
def vgg16_gap(pretrained: bool = False, **kwargs: Any) -> VggGap:
    """VGG16-GAP: the CAM/ADL papers' WSOL baseline."""
    return _create('vgg16_gap', pretrained, **kwargs)


@register_model
@explain_hub_errors
def vgg16_gap_adl(
    pretrained: bool = False,
    adl_after: AdlAfter | None = None,
    adl_gamma: float = 0.8,
    adl_drop_rate: float = 0.75,
    **kwargs: Any,
) -> VggGap:
    """VGG16-GAP with ADL after pool3, pool4 and conv5_3 (the ADL paper's best placement), gamma 0.8."""
    return _create(
        'vgg16_gap_adl',
        pretrained,
        adl_after=adl_after,
        adl_default_after=_ADL_AFTER,
        adl_gamma=adl_gamma,
        adl_drop_rate=adl_drop_rate,
        **kwargs,
    )
