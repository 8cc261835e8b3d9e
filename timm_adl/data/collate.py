"""Batching that keeps every image's boxes, and the loader the trainer and evaluator use.

timm's ``create_loader`` is not used: its prefetcher path (``fast_collate`` + ``PrefetchLoader``) keeps only
``(image, target)`` and silently drops the boxes, and it replaces the dataset's transform with its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = ['ShardSampler', 'create_wsol_loader', 'wsol_collate']


def wsol_collate(batch: Sequence[tuple]) -> tuple:
    """``[(image, label, boxes[, mask, ignore]), ...]`` -> ``(images, labels, boxes[, masks, ignores])``.

    ``images`` (N, 3, H, W); ``labels`` (N,) int64; ``boxes`` a list of N float tensors (K_i, 4), K_i
    varying per image; ``masks`` and ``ignores`` (N, H, W) bool, for mask data sets (OpenImages).
    """
    if not batch:
        raise ValueError('wsol_collate got an empty batch')
    width = len(batch[0])
    if width not in (3, 5) or any(len(item) != width for item in batch):
        raise ValueError(
            f'wsol_collate expects items (image, label, boxes) or (image, label, boxes, mask, ignore), '
            f'got lengths {sorted({len(item) for item in batch})}'
        )
    images = torch.stack([item[0] for item in batch])
    labels = torch.tensor([int(item[1]) for item in batch], dtype=torch.long)
    boxes = [torch.as_tensor(item[2], dtype=torch.float32).reshape(-1, 4) for item in batch]
    if width == 3:
        return images, labels, boxes
    masks = torch.stack([torch.as_tensor(item[3], dtype=torch.bool) for item in batch])
    ignores = torch.stack([torch.as_tensor(item[4], dtype=torch.bool) for item in batch])
    return images, labels, boxes, masks, ignores


class ShardSampler(Sampler[int]):
    """Every ``num_replicas``-th index from ``rank``, in order, without padding.

    For distributed *evaluation*: ``DistributedSampler`` repeats samples to even out the shards, which
    would count those images twice in a metric; here the shards differ in length by at most one instead.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        if num_replicas is None or rank is None:
            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError(
                    'ShardSampler needs num_replicas and rank, or an initialised torch.distributed'
                )
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank must be in [0, {num_replicas}), got {rank}')
        self.num_samples_total = len(dataset)
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples_total, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples_total, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """No-op, so a training loop may call it on any loader's sampler."""


def create_wsol_loader(
    dataset: Dataset,
    batch_size: int,
    is_training: bool,
    num_workers: int = 0,
    distributed: bool = False,
    seed: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` with :func:`wsol_collate`, shuffled (seeded) for training, in order for evaluation.

    ``distributed=True`` shards over the initialised process group: ``DistributedSampler`` (shuffled with
    ``seed``; call ``loader.sampler.set_epoch(epoch)`` each epoch) for training, :class:`ShardSampler`
    (no repeated images) for evaluation.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if distributed:
        if is_training:
            sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
        else:
            sampler = ShardSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=is_training and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=wsol_collate,
        pin_memory=pin_memory,
        drop_last=drop_last and is_training,
        generator=generator,
        persistent_workers=num_workers > 0,
    )
