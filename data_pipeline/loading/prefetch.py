"""Work done ahead of its consumer by a few threads, handed over in order.

The DALI loader reads a step's encoded images (one `os.pread` per sample, which releases the GIL)
while the training thread runs the steps before it; on a shared file system that latency would
otherwise stall every step.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(fn: Callable[[T], R], items: Iterable[T], threads: int, depth: int | None = None) -> Iterator[R]:
    """fn(item) for each item, in order, with up to `depth` (default 2 x threads) computed ahead."""
    depth = max(1, depth or 2 * threads)
    if threads <= 1 and depth <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="mnemo-prefetch")
    queue: deque = deque()
    it = iter(items)
    try:
        for item in it:
            queue.append(pool.submit(fn, item))
            if len(queue) >= depth:
                break
        while queue:
            result = queue.popleft().result()
            for item in it:
                queue.append(pool.submit(fn, item))
                break
            yield result
    finally:
        for f in queue:
            f.cancel()
        pool.shutdown(wait=True)
