"""Ground-truth masks of OpenImages30k the way wsolevaluation builds them (``evaluation.get_mask``).

Each mask PNG is read as 8-bit grey with OpenCV and resized with ``INTER_NEAREST`` (OpenCV's nearest
picks different source pixels than PIL's, so the reference's library is used), then thresholded at 0.5.
The foreground is the union of the instance masks; the ignore region is the ignore-box mask minus that
foreground, so no pixel is both.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

__all__ = ['load_mask', 'load_masks']


def load_mask(path: str, out_hw: tuple[int, int], image_id: str = '') -> np.ndarray:
    """Read one mask PNG, resize (nearest, OpenCV) to ``out_hw = (H, W)``, return a bool array ``> 0.5``."""
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        owner = f' of image {image_id!r}' if image_id else ''
        raise OSError(f'cannot read mask{owner}: {path} (missing, corrupt or not an image)')
    mask = cv2.resize(mask.astype(np.float32), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
    return mask > 0.5


def load_masks(
    mask_paths: Sequence[str], ignore_path: str | None, out_hw: tuple[int, int], image_id: str = ''
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(foreground, ignore)``, two bool (H, W) tensors, for one image."""
    foreground = np.zeros(out_hw, dtype=bool)
    for path in mask_paths:
        foreground |= load_mask(path, out_hw, image_id)
    if ignore_path:
        ignore = load_mask(ignore_path, out_hw, image_id) & ~foreground
    else:
        ignore = np.zeros(out_hw, dtype=bool)
    return torch.from_numpy(foreground), torch.from_numpy(ignore)
