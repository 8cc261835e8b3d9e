"""MobileNetV1 for WSOL (last strided conv at stride 1: a 14x14 CAM at 224) and its ADL twin.

timm's own ``mobilenetv1_100`` (built by timm's entrypoint), with the depthwise conv that opens the last
stage (``blocks.4.0.conv_dw``, the network's last stride-2 conv) set to stride 1, as the ADL paper does
("the stride of the last strided convolution set to 1"). Its 3x3 padding is 1 at either stride, so the
keys, shapes and timm's ImageNet weights are unchanged.
"""

from typing import Any

from timm.models import EfficientNet, generate_default_cfgs, model_entrypoint, register_model

from ._checkpoints import explain_hub_errors, wsol_pretrained_cfgs
from ._wsol_common import AdlAfter, base_cfg, build_wsol_model, set_feature_reduction, set_stride_one

__all__: list[str] = []

# The paper gives gamma (0.95) but no MobileNetV1 placement, and junsukchoe/ADL never released one. We
# use the ResNet placement by analogy, at block boundaries only (never between a conv and its norm):
# blocks.3.0 = the first block at stride 16 (as layer3.0: the paper's "after pool4"), blocks.4.0 = the first
# block of the former stride-32 stage (as layer4.0) and blocks.4.1 = the last block, i.e. the final
# feature map (as layer4.2). Pass adl_after=[...] to choose others.
_ADL_AFTER = ('blocks.3.0', 'blocks.4.0', 'blocks.4.1')


# feature_info names the stages inside `blocks` (blocks.3, ...): features_only must look inside it. A fresh
# dict per call: timm's builder writes out_indices / feature_cls into the one it is given.
def _feature_cfg() -> dict[str, Any]:
    return dict(flatten_sequential=True)


def _mobilenetv1_s16(**kwargs: Any) -> EfficientNet:
    model = model_entrypoint('mobilenetv1_100')(pretrained=False, **kwargs)
    set_stride_one(model, ('blocks.4.0.conv_dw',))
    set_feature_reduction(model, 'blocks.4', 16)
    return model


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        'mobilenetv1_100.ra4_e3600_r224_in1k',
        pool_size=(14, 14),
        classifier='classifier',
        description='MobileNetV1 with the last strided conv at stride 1, 14x14 CAM at 224.',
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        'mobilenetv1_wsol.in1k_init': _cfg(),
        'mobilenetv1_adl.in1k_init': _cfg(),
        **wsol_pretrained_cfgs('mobilenetv1_wsol', _cfg()),
        **wsol_pretrained_cfgs('mobilenetv1_adl', _cfg()),
    }
)


@register_model
@explain_hub_errors
def mobilenetv1_wsol(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """MobileNetV1 (timm ``mobilenetv1_100``) with its last strided conv at stride 1."""
    return build_wsol_model(
        _mobilenetv1_s16, 'mobilenetv1_wsol', pretrained, feature_cfg=_feature_cfg(), **kwargs
    )


@register_model
@explain_hub_errors
def mobilenetv1_adl(
    pretrained: bool = False,
    adl_after: AdlAfter | None = None,
    adl_gamma: float = 0.95,
    adl_drop_rate: float = 0.75,
    **kwargs: Any,
) -> EfficientNet:
    """``mobilenetv1_wsol`` with ADL after blocks.3.0, blocks.4.0 and blocks.4.1, gamma 0.95."""
    return build_wsol_model(
        _mobilenetv1_s16,
        'mobilenetv1_adl',
        pretrained,
        feature_cfg=_feature_cfg(),
        adl_after=adl_after,
        adl_default_after=_ADL_AFTER,
        adl_gamma=adl_gamma,
        adl_drop_rate=adl_drop_rate,
        **kwargs,
    )
