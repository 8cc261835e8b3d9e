"""The dataset class every WSOL format shares: records in, ``(image, label, boxes[, mask, ignore])`` out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

from .masks import load_masks
from .records import WSOLRecord
from .transforms import scale_boxes, to_hw, wsol_eval_transform, wsol_train_transform

__all__ = ['WSOLDataset', 'load_image']


def load_image(path: str, image_id: str) -> Image.Image:
    """Open an image as RGB, turning any decoding failure into an error naming the id and the path."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert('RGB')
    except FileNotFoundError:
        raise FileNotFoundError(f'image {image_id!r} not found: {path}') from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three for bad files
        raise OSError(f'cannot read image {image_id!r} at {path}: corrupt or not an image ({err})') from err


class WSOLDataset(Dataset):
    """Images with their class label and localization ground truth, in the WSOL evaluation protocol.

    Items (evaluation, ``is_training=False``):
        ``(image (3, H, W) float tensor, label int, boxes (K, 4) float32)`` where the boxes are inclusive
        ``x0 y0 x1 y1`` in pixels of the *returned* image (scaled from the annotation's image size the
        reference's way, see :func:`scale_boxes`). ``K`` varies per image (0 when the split has no
        boxes). Mask data sets (OpenImages) add ``mask`` and ``ignore``: bool (H, W) tensors.
    Items (training): ``(image, label, boxes (0, 4))``: random crops make the boxes meaningless and the
        training loss does not need them, so they are returned empty and masks are not read.

    Args:
        records: the parsed split (see the format classes, which build them).
        is_training: training transform (resize 256/224 of ``img_size``, random crop, flip) or
            evaluation transform (squash to ``img_size``, no crop).
        img_size, mean, std, interpolation: the transform's settings (``mean``/``std`` should be the
            model's, see :func:`timm_adl.data.model_mean_std`).
        transform: replaces the default image transform. For evaluation it must resize to exactly
            ``img_size`` without cropping, or the boxes will not match the image.
        classes: class names, index = label.
    """

    def __init__(
        self,
        records: Sequence[WSOLRecord],
        is_training: bool = False,
        img_size: int | Sequence[int] = 224,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        interpolation: str = 'bilinear',
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.records = list(records)
        self.is_training = bool(is_training)
        self.img_hw = to_hw(img_size)
        if transform is None:
            build = wsol_train_transform if self.is_training else wsol_eval_transform
            transform = build(self.img_hw, mean=mean, std=std, interpolation=interpolation)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None
        self.has_masks = any(r.mask_paths for r in self.records)
        self.has_boxes = any(r.boxes for r in self.records)

    @property
    def image_ids(self) -> list[str]:
        """Ids in item order (paths relative to the data root, as wsolevaluation names score maps)."""
        return [r.image_id for r in self.records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return max(self.labels, default=-1) + 1

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple:
        record = self.records[index]
        img = load_image(record.path, record.image_id)
        image = self.transform(img)
        if self.is_training:
            return image, record.label, torch.zeros((0, 4), dtype=torch.float32)
        size = record.size if record.size is not None else img.size
        boxes = scale_boxes(record.boxes, size, self.img_hw)
        if not self.has_masks:
            return image, record.label, boxes
        mask, ignore = load_masks(record.mask_paths, record.ignore_path, self.img_hw, record.image_id)
        return image, record.label, boxes, mask, ignore

    def __repr__(self) -> str:
        mode = 'train' if self.is_training else 'eval'
        gt = 'masks' if self.has_masks else ('boxes' if self.has_boxes else 'labels only')
        return f'{type(self).__name__}({len(self)} images, {mode}, img_hw={self.img_hw}, gt={gt})'
