"""Process group set-up for ``torchrun``, seeding, RNG snapshots and a resumable, rank-aware sampler.

Seeding scheme (what makes a run, and a resumed run, reproduce):

- the model is initialised under ``torch.manual_seed(seed)`` on every rank (DDP also broadcasts rank 0's
  weights, so the ranks agree either way);
- the training-time generators (torch CPU and CUDA, numpy, python ``random``) are then seeded with
  ``seed + rank``: ADL draws its drop/importance choice from torch's generator of the input's device, so
  each rank draws its own choice per step per layer, as the reference's multi-GPU towers do, and a run
  reproduces;
- data order is a permutation drawn from ``seed + epoch`` (the same on all ranks); rank ``r`` of ``W`` takes
  the ``r``-th slice of each global batch, so a W-process run sees exactly the batches of a 1-process run;
- each sample's augmentation is drawn from a generator seeded by ``(seed, epoch, index)``, so it does not
  depend on the worker that loads it nor on where a run was interrupted.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

__all__ = [
    'DistInfo',
    'GlobalBatchSampler',
    'SeededDataset',
    'get_rng_state',
    'init_distributed',
    'seed_everything',
    'set_rng_state',
]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ['RANK']), world_size, int(os.environ.get('LOCAL_RANK', '0')))
    if not dist.is_initialized():
        backend = 'nccl' if device_type == 'cuda' else 'gloo'
        if device_type == 'cuda':
            torch.cuda.set_device(info.local_rank)
        # Rank 0 writes checkpoints and the log while the others wait: allow a long pause.
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> dict:
    """Snapshot of every generator a step may use, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state['python']))
    name, key, *rest = state['numpy']
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuples(obj):
    # random.setstate needs tuples; a state that travelled through gather_object may hold lists.
    return tuple(_as_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


class GlobalBatchSampler(Sampler):
    """Batch sampler: yields this rank's list of ``(epoch, index)`` per step, resumable at any step.

    Each epoch is a permutation of the data set drawn from ``seed + epoch``, cut into global batches of
    ``global_batch`` (the incomplete last one dropped when ``drop_last``); this rank gets its contiguous slice
    of each. ``set_epoch(epoch, start_step)`` skips the steps a resumed run already took.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(
                f'batch_size {global_batch} must be divisible by the number of processes {world_size}'
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch)
        return full if self.drop_last or rest == 0 else full + 1

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self._order()
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            # A short last batch (drop_last=False) is split as evenly as the ranks allow.
            per = -(-len(batch) // self.world_size)
            yield [(self.epoch, index) for index in batch[self.rank * per : (self.rank + 1) * per]]

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step


class SeededDataset(Dataset):
    """Wraps a data set so item ``(epoch, index)`` draws its augmentation from ``(seed, epoch, index)``.

    torch's CPU generator (the one transforms and, on CPU, ADL draw from) is restored afterwards, so loading
    in the main process (``num_workers=0``) leaves the training draws untouched. Python's and numpy's global
    generators are seeded per item too but not restored (saving numpy's state costs ~0.25 ms an item); the
    trainer draws nothing from them.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key):
        epoch, index = key
        digest = hashlib.blake2b(b'%d:%d:%d' % (self.seed, epoch, index), digest_size=8).digest()
        item_seed = int.from_bytes(digest, 'little') >> 1  # 63 bits: a valid torch seed
        random.seed(item_seed)
        np.random.seed(item_seed % 2**32)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed)  # not torch.manual_seed: no CUDA seeding per item
            return self.dataset[index]
