"""Exemplar selection as pure functions of features: herding (iCaRL) and random.

Both return indices in priority order (best first), so trimming a class to m exemplars keeps the
first m. Deterministic: herding breaks ties by the lowest index; random depends only on its generator.
"""
from __future__ import annotations

import torch


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding on L2-normalised features: greedily pick samples whose running mean tracks the class mean."""
    f = torch.nn.functional.normalize(features.double(), dim=1)
    mu = f.mean(0)
    m = min(m, len(f))
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(f), dtype=torch.bool)
    for k in range(1, m + 1):
        # distance of the mean of (chosen + candidate) to the class mean
        dist = ((mu[None, :] - (running[None, :] + f) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))            # first minimum: deterministic tie-break
        chosen.append(i)
        available[i] = False
        running += f[i]
    return torch.tensor(chosen, dtype=torch.int64)


def random_order(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[: min(m, n)]
