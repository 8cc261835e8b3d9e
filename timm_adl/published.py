"""Published WSOL numbers of CAM and ADL per paper backbone, each with its source, for ``timm-adl reproduce``.

Two tables, two protocols:

* the ADL paper's Table 3 (Choe & Shim, CVPR 2019): Top-1 Loc at a fixed CAM threshold, CAM and ADL for
  the four backbones on CUB-200-2011 and ImageNet-1k. The backbone is SE-ResNet50 for "ResNet50-SE". The CUB
  InceptionV3 CAM figure is not the ADL paper's own run: it quotes the SPG paper.
* wsolevaluation's main table (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
  CVPR 2020; clovaai/wsolevaluation README, ``main_table.png``): MaxBoxAccV2 on the test split,
  hyperparameters tuned on train-fullsup. That table prints ADL as a difference to CAM; the ADL values here
  are CAM + that difference. Its ResNet50 is the plain torchvision ResNet50 (no SE blocks), and it has no
  MobileNetV1 row.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ['ADL_PAPER_SOURCE', 'PUBLISHED_RESULTS', 'WSOLEVAL_SOURCE', 'PublishedResult', 'published_results']

ADL_PAPER_SOURCE = (
    'Choe & Shim, "Attention-Based Dropout Layer for Weakly Supervised Object Localization", CVPR 2019, '
    'Table 3 (https://arxiv.org/abs/1908.10028)'
)
WSOLEVAL_SOURCE = (
    'Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020: '
    'clovaai/wsolevaluation README main table (https://github.com/clovaai/wsolevaluation); '
    'ADL = CAM + the printed difference'
)


@dataclass(frozen=True)
class PublishedResult:
    """One published figure: data set and backbone as ``timm-adl`` names them, metric in percent."""

    dataset: str  # 'cub' | 'imagenet' (recipe folders)
    backbone: str  # recipe backbone: 'vgg16_gap', 'resnet50_se', 'mobilenetv1', 'inception_v3'
    method: str  # 'cam' | 'adl'
    metric: str  # 'top1_loc' (paper protocol, fixed threshold) | 'max_box_acc_v2' (oracle threshold)
    value: float
    table: str  # 'ADL paper Table 3' | 'wsolevaluation'
    source_backbone: str  # the backbone as the source names it
    source: str
    note: str = ''


def _paper(dataset: str, backbone: str, name: str, cam: float, adl: float, cam_note: str = '') -> list:
    return [
        PublishedResult(
            dataset, backbone, m, 'top1_loc', v, 'ADL paper Table 3', name, ADL_PAPER_SOURCE, note
        )
        for m, v, note in (('cam', cam, cam_note), ('adl', adl, ''))
    ]


def _wsoleval(dataset: str, backbone: str, name: str, cam: float, adl: float, note: str = '') -> list:
    return [
        PublishedResult(
            dataset, backbone, m, 'max_box_acc_v2', v, 'wsolevaluation', name, WSOLEVAL_SOURCE, note
        )
        for m, v in (('cam', cam), ('adl', adl))
    ]


_PLAIN_R50 = 'plain ResNet50 (torchvision), not the SE-ResNet50 of the ADL paper and of our recipe'

PUBLISHED_RESULTS: tuple[PublishedResult, ...] = tuple(
    _paper('cub', 'vgg16_gap', 'VGG-GAP', 34.41, 52.36)
    + _paper('cub', 'resnet50_se', 'ResNet50-SE', 42.72, 62.29)
    + _paper('cub', 'mobilenetv1', 'MobileNetV1', 43.70, 47.74)
    + _paper(
        'cub', 'inception_v3', 'InceptionV3', 43.67, 53.04, 'its CAM figure is quoted from the SPG paper'
    )
    + _paper('imagenet', 'vgg16_gap', 'VGG-GAP', 42.80, 44.92)
    + _paper('imagenet', 'resnet50_se', 'ResNet50-SE', 46.19, 48.53)
    + _paper('imagenet', 'mobilenetv1', 'MobileNetV1', 41.66, 43.01)
    + _paper('imagenet', 'inception_v3', 'InceptionV3', 46.29, 48.71)
    + _wsoleval('cub', 'vgg16_gap', 'VGG16', 63.7, 66.3)
    + _wsoleval('cub', 'inception_v3', 'InceptionV3', 56.7, 58.8)
    + _wsoleval('cub', 'resnet50_se', 'ResNet50', 63.0, 58.4, _PLAIN_R50)
    + _wsoleval('imagenet', 'vgg16_gap', 'VGG16', 60.0, 59.8)
    + _wsoleval('imagenet', 'inception_v3', 'InceptionV3', 63.4, 61.4)
    + _wsoleval('imagenet', 'resnet50_se', 'ResNet50', 63.7, 63.7, _PLAIN_R50)
)


def published_results(dataset: str, backbone: str) -> list[PublishedResult]:
    """The published figures for one paper row (empty for a backbone a table does not have)."""
    return [r for r in PUBLISHED_RESULTS if r.dataset == dataset and r.backbone == backbone]
