"""WSOL data sets: images with labels and localization ground truth, in the evaluation protocol's geometry.

Formats: CUB-200-2011's official layout (``'cub'``), clovaai/wsolevaluation's metadata files
(``'wsol-metadata'``: CUB, ILSVRC, OpenImages30k, and our synthetic set) and ImageNet with its XML box
annotations (``'imagenet'``). Every item is ``(image, label, boxes)`` (+ ``mask, ignore`` for mask data),
with boxes in pixels of the returned image; batch with :func:`wsol_collate` / :func:`create_wsol_loader`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .collate import ShardSampler, create_wsol_loader, wsol_collate
from .cub import CUB_SPLITS, CUBDataset
from .dataset import WSOLDataset, load_image
from .imagenet import ImageNetBoxDataset
from .masks import load_masks
from .records import GT_BOX_MODES, WSOLDataError, WSOLRecord, check_choice
from .transforms import check_mean_std, model_mean_std, scale_boxes, wsol_eval_transform, wsol_train_transform
from .wsol_metadata import SPLIT_ALIASES, WSOLMetadataDataset

__all__ = [
    'CUB_SPLITS',
    'DATASET_NAMES',
    'GT_BOX_MODES',
    'SPLIT_ALIASES',
    'CUBDataset',
    'ImageNetBoxDataset',
    'ShardSampler',
    'WSOLDataError',
    'WSOLDataset',
    'WSOLMetadataDataset',
    'WSOLRecord',
    'check_mean_std',
    'create_wsol_dataset',
    'create_wsol_loader',
    'load_image',
    'load_masks',
    'model_mean_std',
    'scale_boxes',
    'wsol_collate',
    'wsol_eval_transform',
    'wsol_train_transform',
]

DATASET_NAMES = ('cub', 'wsol-metadata', 'imagenet')


def create_wsol_dataset(
    name: str,
    root: str | os.PathLike,
    split: str,
    is_training: bool = False,
    img_size: int | Sequence[int] = 224,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    metadata_root: str | os.PathLike | None = None,
    gt_box_mode: str = 'all',
    **kwargs,
) -> WSOLDataset:
    """Build a WSOL data set by format name; all annotation checks run here, before any batch.

    Args:
        name: ``'cub'`` (official layout; split ``'train'``/``'test'``), ``'wsol-metadata'``
            (wsolevaluation's files; split is a folder of ``metadata_root``, ``'train-fullsup'`` accepted)
            or ``'imagenet'`` (XML boxes; split usually ``'val'``).
        root: data root (images, and for ``'cub'``/``'imagenet'`` the annotation files).
        is_training: training transform and no localization (boxes come back empty); else evaluation.
        img_size: network input size; evaluation squashes every image to it and scales boxes to match.
        mean, std: normalisation, normally the model's (:func:`model_mean_std`).
        metadata_root: ``'wsol-metadata'`` only: the folder of split folders (default ``<root>/metadata``).
        gt_box_mode: ``'all'`` boxes of an image (default) or the ``'first'`` listed.
        **kwargs: format options: ``mask_root``, ``proxy``, ``num_samples_per_class``, ``seed``,
            ``localization_file`` (wsol-metadata); ``image_dir``, ``ann_dir``, ``synset_mapping`` (imagenet);
            ``interpolation``, ``transform``, ``classes`` (all).
    """
    check_choice(name, DATASET_NAMES, 'WSOL dataset name')
    check_choice(gt_box_mode, GT_BOX_MODES, 'gt_box_mode')
    common = dict(is_training=is_training, img_size=img_size, mean=mean, std=std, gt_box_mode=gt_box_mode)
    if name == 'wsol-metadata':
        return WSOLMetadataDataset(root, split, metadata_root=metadata_root, **common, **kwargs)
    if metadata_root is not None:
        raise ValueError(f"metadata_root is only used by the 'wsol-metadata' format, not {name!r}")
    if name == 'cub':
        return CUBDataset(root, split, **common, **kwargs)
    return ImageNetBoxDataset(root, split, **common, **kwargs)
