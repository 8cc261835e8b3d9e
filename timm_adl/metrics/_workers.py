"""Worker threads for box extraction: a batch is cut into chunks and scored while the caller goes on."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ['CHUNK_PIXELS', 'BoxWorkers', 'check_num_threads', 'chunk_bounds']

# pixels per call of the compiled sweep: its set-up (about 0.15 ms, mostly its work arrays) amortised
CHUNK_PIXELS = 4_000_000


def check_num_threads(num_threads: int | None) -> int:
    """Threads for box extraction: ``None`` means every CPU core this process may use."""
    if num_threads is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f'num_threads must be a positive int or None (every core), got {num_threads!r}')
    return int(num_threads)


def chunk_bounds(n: int, h: int, w: int, num_threads: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` chunks of a batch of ``n`` maps of ``h x w``: each small enough for one
    call of the compiled sweep and, with several threads, as many for every thread."""
    if n == 0:
        return []
    n_chunks = -(-n // max(1, CHUNK_PIXELS // max(1, h * w)))
    threads = min(num_threads, n_chunks)
    if threads > 1:
        n_chunks = -(-n_chunks // threads) * threads
    size = -(-n // n_chunks)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


class BoxWorkers:
    """Runs the box extraction of each batch in chunks on worker threads, then the batch's ``finish``.

    ``submit`` returns while the workers go on, up to ``depth`` batches ahead, so the extraction of one
    batch overlaps with whatever the caller does next (the next batch's checks, a model's forward pass);
    ``wait`` finishes them all. ``finish`` callbacks run on the calling thread, in submission order, so
    the evaluators' counters need no lock. The compiled kernels and OpenCV release the GIL. A chunk must
    only read arrays the caller cannot change afterwards (the evaluators hand over their own 8-bit
    copies). With one thread everything runs inside ``submit``.
    """

    def __init__(self, num_threads: int, depth: int = 2):
        self.num_threads = num_threads
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque = deque()

    def submit(self, fn: Callable[[int, int], object], bounds: list, finish: Callable[[list], None]) -> None:
        """``finish([fn(a, b) for a, b in bounds])``, now or after a later call."""
        if self.num_threads <= 1:
            finish([fn(a, b) for a, b in bounds])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix='timm_adl_boxes')
        self._pending.append(([self._pool.submit(fn, a, b) for a, b in bounds], finish))
        while len(self._pending) > self.depth:
            self._finish_oldest()

    def wait(self) -> None:
        """Finish every submitted batch (a worker's exception is raised here)."""
        while self._pending:
            self._finish_oldest()

    def discard(self) -> None:
        """Wait for the submitted batches without finishing them."""
        while self._pending:
            for f in self._pending.popleft()[0]:
                f.exception()

    def _finish_oldest(self) -> None:
        futures, finish = self._pending.popleft()
        finish([f.result() for f in futures])

    def __getstate__(self) -> dict:  # copies and pickles carry the finished state, not the threads
        self.wait()
        return {'num_threads': self.num_threads, 'depth': self.depth}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state['num_threads'], state['depth'])
