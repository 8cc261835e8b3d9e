"""Hide-and-Seek (Singh & Lee, ICCV 2017): hide random square patches of each training image.

The ADL paper (Choe & Shim, CVPR 2019, Table 3) compares against it as "HaS-32": 32 px patches, each hidden
with probability 0.5, at training time only; evaluation always sees the whole image.

Hidden pixels take the data set's mean colour, not black, so that the statistics a first-layer filter sees
over a hidden region match what it sees on average over a visible one (the paper's argument for this fill value).
The transform runs after ``Normalize``, where that mean is 0 when the normalisation mean is the data's; hence
``fill=0.0`` by default. Give another ``fill`` only for inputs normalised with some other mean.
"""

from __future__ import annotations

import math

import torch

__all__ = ['HideAndSeek', 'scaled_patch_size']

REFERENCE_SIZE = 224  # image side the paper's patch sizes are given at


def scaled_patch_size(patch_at_224: int, img_size: int) -> int:
    """A patch side given at 224 px for an ``img_size`` image: same fraction of the image, at least 1 px."""
    return max(1, round(patch_at_224 * img_size / REFERENCE_SIZE))


class HideAndSeek:
    """Hide each ``patch_size`` x ``patch_size`` cell of a (C, H, W) tensor with probability ``hide_prob``.

    The grid starts at the top-left corner; when ``patch_size`` does not divide H or W the last row / column
    of cells is partial and hidden the same way. One uniform draw per cell, row-major, from ``generator``
    (None: torch's global CPU generator, which the trainer's ``SeededDataset`` seeds per sample, so a
    resumed run hides the very same patches). Returns a new tensor; the input is left as it is.

    Args:
        patch_size: cell side in pixels (>= 1).
        hide_prob: probability of hiding each cell, in [0, 1] (the paper's 0.5).
        fill: value hidden pixels take; 0.0 is the normalisation mean (see the module docstring).
        generator: optional ``torch.Generator`` for the draws (tests; None in training).
    """

    def __init__(
        self,
        patch_size: int,
        hide_prob: float = 0.5,
        fill: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
            raise ValueError(f'HideAndSeek patch_size must be an int >= 1, got {patch_size!r}')
        if not 0.0 <= float(hide_prob) <= 1.0:
            raise ValueError(f'HideAndSeek hide_prob must be in [0, 1], got {hide_prob!r}')
        if not math.isfinite(float(fill)):
            raise ValueError(f'HideAndSeek fill must be a finite number, got {fill!r}')
        self.patch_size = int(patch_size)
        self.hide_prob = float(hide_prob)
        self.fill = float(fill)
        self.generator = generator

    def hidden_mask(self, height: int, width: int) -> torch.Tensor:
        """Draw the (height, width) bool mask of hidden pixels: the cells' draws, blown up to pixels."""
        rows, cols = math.ceil(height / self.patch_size), math.ceil(width / self.patch_size)
        # U[0, 1) < p: never true for p = 0, always for p = 1
        cells = torch.rand((rows, cols), generator=self.generator) < self.hide_prob
        pixels = cells.repeat_interleave(self.patch_size, 0).repeat_interleave(self.patch_size, 1)
        return pixels[:height, :width]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dim() != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(
                f'HideAndSeek expects a (C, H, W) tensor (after ToTensor/Normalize), got {shape}'
            )
        mask = self.hidden_mask(img.shape[-2], img.shape[-1]).to(img.device)
        return img.masked_fill(mask, self.fill)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(patch_size={self.patch_size}, hide_prob={self.hide_prob}, fill={self.fill})'
