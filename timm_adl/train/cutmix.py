"""CutMix on the training batch (recipe keys ``aug.cutmix_alpha`` / ``aug.cutmix_prob``), through timm's Mixup.

timm's ``Mixup`` draws from numpy's global generator. Here each step draws from its own stream, seeded by
``(seed, rank, step)``, and numpy's global state is put back afterwards: the draw does not depend on how
many loader workers (which reseed numpy per item in the main process when there are none) ran before it,
and a resumed run redraws exactly what the interrupted one drew without saving anything more.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .config import AugConfig

__all__ = ['apply_cutmix', 'build_cutmix', 'cutmix_loss']


def build_cutmix(aug: AugConfig, num_classes: int):
    """timm's ``Mixup`` set to CutMix only (no label smoothing), or None when ``aug.cutmix_alpha`` is 0."""
    if aug.cutmix_alpha <= 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=0.0,
        cutmix_alpha=aug.cutmix_alpha,
        prob=aug.cutmix_prob,
        label_smoothing=0.0,
        num_classes=num_classes,
    )


def _step_seed(seed: int, rank: int, step: int) -> int:
    digest = hashlib.blake2b(b'cutmix:%d:%d:%d' % (seed, rank, step), digest_size=4).digest()
    return int.from_bytes(digest, 'little')  # 32 bits: numpy's seed range


def apply_cutmix(
    mixup, images: torch.Tensor, labels: torch.Tensor, *, seed: int, rank: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch with CutMix patches (in place) and its soft targets, drawn from the step's own stream."""
    if len(images) % 2:
        raise ValueError(f'CutMix needs an even batch on each process, got {len(images)} images')
    saved = np.random.get_state()
    np.random.seed(_step_seed(seed, rank, step))
    try:
        return mixup(images, labels)
    finally:
        np.random.set_state(saved)


def cutmix_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (timm's SoftTargetCrossEntropy)."""
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy()(logits, soft_targets)
