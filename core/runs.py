"""Cutting an ordered list into consecutive runs whose sizes add up to at most a bound."""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def bounded_runs(items: Sequence[T], size_of: Callable[[T], int], limit: int) -> list[list[T]]:
    """Consecutive runs of `items`, in order, each of total `size_of` at most `limit`; an item larger than
    `limit` is a run of its own (so every run holds at least one item)."""
    out: list[list[T]] = []
    size = 0
    for item in items:
        n = size_of(item)
        if out and size + n <= limit:
            out[-1].append(item)
            size += n
        else:
            out.append([item])
            size = n
    return out
