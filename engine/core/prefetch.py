"""Training examples made beside the training: a pool of worker processes renders examples for fresh seeds
while the main process trains on a GPU, so the GPU waits for the CPUs as little as they allow.

With no workers, ``Prefetcher`` makes examples in the calling process when they are asked for (the CPU
recipe: same examples in the same order on every run).  With workers, examples arrive as they are
finished, in any order; each is still a function of its seed alone.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


def _one_thread() -> None:
    """Worker start-up: one torch thread each (the workers together use the machine's cores)."""
    import torch

    torch.set_num_threads(1)


class Prefetcher(Generic[T]):
    """``make(seed)`` for the seeds of ``seeds``, made inline (``workers`` 0) or by worker processes that keep
    ``ahead`` examples in progress.  ``make`` must be a module-level function (workers import it)."""

    def __init__(self, make: Callable[[int], T], seeds: Iterator[int], workers: int = 0, ahead: int | None = None):
        self.make, self.seeds = make, seeds
        self.pending: deque[Future] = deque()
        self.executor: ProcessPoolExecutor | None = None
        if workers > 0:
            # spawn: the parent may hold a CUDA context, which forked children must not inherit
            self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_one_thread)
            self.ahead = ahead if ahead is not None else 2 * workers
            self._top_up()

    def _top_up(self) -> None:
        while len(self.pending) < self.ahead:
            self.pending.append(self.executor.submit(self.make, next(self.seeds)))

    def take(self, count: int) -> list[T]:
        """Exactly ``count`` examples, waiting for them."""
        if self.executor is None:
            return [self.make(next(self.seeds)) for _ in range(count)]
        made = []
        while len(made) < count:
            self._top_up()
            made.append(self.pending.popleft().result())
        self._top_up()
        return made

    def ready(self, count: int) -> list[T]:
        """``count`` new examples inline; with workers, those finished by now (possibly none), without waiting."""
        if self.executor is None:
            return self.take(count)
        made = []
        while self.pending and self.pending[0].done():
            made.append(self.pending.popleft().result())
        self._top_up()
        return made

    def close(self) -> None:
        """Stop the workers (examples in progress are dropped)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


class Seeds:
    """Fresh example seeds for process ``rank`` of ``world``, interleaved so processes never share one;
    ``next`` (the first seed of the following round) is what a resumed run starts from."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.next, self.rank, self.world = start, rank, world

    def __iter__(self) -> Seeds:
        return self

    def __next__(self) -> int:
        self.next += self.world
        return self.next - self.world + self.rank
