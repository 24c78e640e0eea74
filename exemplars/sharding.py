"""Spreading exemplar optimisation over ranks (pure functions, no torch.distributed).

Classes are grouped by protocol order and the configured group size only, so the groups (and hence
the optimised exemplars, which depend on which classes share a temporary model) are the same for
any number of processes. Ranks then take whole groups, balanced by an estimated cost.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["class_groups", "assign_groups"]


def class_groups(classes: list[int], group_size: int) -> list[list[int]]:
    """Consecutive chunks of `group_size` classes in the given (protocol) order; the last may be
    shorter. Independent of the world size by construction."""
    if group_size < 1:
        raise ValueError(f"class_groups: group_size must be >= 1, got {group_size}")
    return [list(classes[i:i + group_size]) for i in range(0, len(classes), group_size)]


def assign_groups(groups: Sequence[Sequence[int]], costs: Sequence[float] | None,
                  world_size: int) -> list[list[int]]:
    """Indices of `groups` per rank (list of length `world_size`), balanced by cost.

    Greedy longest-processing-time: groups in order of decreasing cost (ties: lower group index
    first) each go to the currently least-loaded rank (ties: lower rank). `costs` defaults to the
    group sizes (e.g. pass number of exemplars x inner steps for a better estimate). Each rank's
    indices are returned in increasing order. Deterministic: a pure function of its arguments.
    """
    if world_size < 1:
        raise ValueError(f"assign_groups: world_size must be >= 1, got {world_size}")
    if costs is None:
        costs = [float(len(g)) for g in groups]
    if len(costs) != len(groups):
        raise ValueError(f"assign_groups: {len(groups)} groups but {len(costs)} costs")
    if any(c < 0 for c in costs):
        raise ValueError("assign_groups: costs must be >= 0")
    load = [0.0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for g in sorted(range(len(groups)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        load[rank] += costs[g]
        out[rank].append(g)
    return [sorted(idx) for idx in out]
