"""The ADL paper's four WSOL backbones, registered in timm's model registry on import.

Each ``*_adl`` model is its baseline with ADL put in by ``timm_adl.insert`` (so ``timm_adl.adl_points``
reports where), and has the same parameters, state_dict keys and ImageNet weights as the baseline.

The model modules do not use ``from __future__ import annotations``: torch.fx copies a ``forward``'s
annotations into the code it generates, and postponed (string) ones become names such as ``_torch_Tensor_``
that TorchScript cannot resolve, so ``torch.jit.script`` of an FX-traced model would fail.
"""

from .wsol_inception import InceptionV3Wsol, inception_v3_adl, inception_v3_wsol
from .wsol_mobilenet import mobilenetv1_adl, mobilenetv1_wsol
from .wsol_resnet import resnet50_se, resnet50_se_adl
from .wsol_vgg import VggGap, vgg16_gap, vgg16_gap_adl

# Each ADL model's baseline twin (naming rule: `X_adl` has a baseline `X` or `X_wsol`).
BASELINES: dict[str, str] = {
    'vgg16_gap_adl': 'vgg16_gap',
    'resnet50_se_adl': 'resnet50_se',
    'mobilenetv1_adl': 'mobilenetv1_wsol',
    'inception_v3_adl': 'inception_v3_wsol',
}

__all__ = [
    'BASELINES',
    'InceptionV3Wsol',
    'VggGap',
    'inception_v3_adl',
    'inception_v3_wsol',
    'mobilenetv1_adl',
    'mobilenetv1_wsol',
    'resnet50_se',
    'resnet50_se_adl',
    'vgg16_gap',
    'vgg16_gap_adl',
]
