"""SE-ResNet50 for WSOL (last strided conv at stride 1: a 14x14 CAM at 224) and its ADL twin.

The ADL paper's ResNet is SE-ResNet50 (junsukchoe/ADL ``backbone/resnet.py``); it is timm's own
``seresnet50`` here, built by timm's entrypoint, with layer4's stride set to 1. No dilation: the paper
and clovaai/wsolevaluation only change the stride, so the keys and shapes stay timm's and its ImageNet
weights load unchanged.
"""

from typing import Any

from timm.models import ResNet, generate_default_cfgs, model_entrypoint, register_model

from ._checkpoints import explain_hub_errors, wsol_pretrained_cfgs
from ._wsol_common import AdlAfter, base_cfg, build_wsol_model, set_feature_reduction, set_stride_one

__all__: list[str] = []

# clovaai/wsolevaluation's ResNet50 placement (_ADL_POSITION = [[], [], [], [0], [0, 2]]), which is also the
# author's SE-ResNet50 setting "31 41 5" in junsukchoe/ADL: after the first bottleneck of layer3 (the
# stride-16 point), after the first bottleneck of layer4 and after the last one (the final map).
_ADL_AFTER = ('layer3.0', 'layer4.0', 'layer4.2')


def _seresnet50_s16(**kwargs: Any) -> ResNet:
    model = model_entrypoint('seresnet50')(pretrained=False, **kwargs)
    # timm puts the bottleneck's stride in conv2 (3x3) and in the 1x1 projection shortcut.
    set_stride_one(model, ('layer4.0.conv2', 'layer4.0.downsample.0'))
    set_feature_reduction(model, 'layer4', 16)
    return model


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        'seresnet50.a1_in1k',
        pool_size=(14, 14),
        classifier='fc',
        description='SE-ResNet50 with layer4 at stride 1, 14x14 CAM at 224.',
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        'resnet50_se.in1k_init': _cfg(),
        'resnet50_se_adl.in1k_init': _cfg(),
        **wsol_pretrained_cfgs('resnet50_se', _cfg()),
        **wsol_pretrained_cfgs('resnet50_se_adl', _cfg()),
    }
)


@register_model
@explain_hub_errors
def resnet50_se(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet50 (timm ``seresnet50``) with layer4 at stride 1: the ADL paper's ResNet baseline."""
    return build_wsol_model(_seresnet50_s16, 'resnet50_se', pretrained, **kwargs)


@register_model
@explain_hub_errors
def resnet50_se_adl(
    pretrained: bool = False,
    adl_after: AdlAfter | None = None,
    adl_gamma: float = 0.9,
    adl_drop_rate: float = 0.75,
    **kwargs: Any,
) -> ResNet:
    """``resnet50_se`` with ADL after layer3.0, layer4.0 and layer4.2, gamma 0.9."""
    return build_wsol_model(
        _seresnet50_s16,
        'resnet50_se_adl',
        pretrained,
        adl_after=adl_after,
        adl_default_after=_ADL_AFTER,
        adl_gamma=adl_gamma,
        adl_drop_rate=adl_drop_rate,
        **kwargs,
    )
