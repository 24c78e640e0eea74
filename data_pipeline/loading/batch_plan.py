"""Which samples each rank takes at each step of an epoch: the one plan every loader follows.

Indices 0..n_real-1 are the phase's real samples (D_i, decoded in memory or read from shards) and
0..n_ex-1 the exemplar tensors (E). A plan is a list of steps, each `(real_idx, ex_idx)` for one rank;
it depends only on (seed, epoch, sizes, rank, world), so every loader and every rank agrees on it.

* Default (`exemplar_share=None`): exemplars are ordinary samples of the union D_i ∪ E (Eq. 5 of the
  paper): one permutation of the union per epoch, cut into global batches; rank r takes every
  world-th sample of each global batch. Every sample (real and exemplar) is seen exactly once per
  epoch across ranks, and a 1-rank and a 2-rank run see the same global batches.
* `exemplar_share=f` (0 < f < 1): every global batch holds round(f * batch) exemplars and the rest
  real samples (over all ranks together: rank r takes every world-th sample of the global batch).
  An epoch is one pass over the real samples (each exactly once across ranks); the exemplars are
  drawn from successive permutations of E, so each is used equally often (±1).

Where an epoch's samples do not fill whole batches, `last_batch` says how they are cut:

* `even` (default): into ceil(n / batch) batches whose sizes differ by at most one (1665 samples at
  batch 128: 13 of 128 and 1 of 1 become 14 of 118-119). A one-image batch trains BatchNorm on one
  image's statistics and takes a full-rate step on one image's gradient: on glyphs without gradient
  clipping it cost a 5-class base phase 23 points (docs/parity.md).
* `short`: full batches and a short last one (what runs did before the key existed).

In both modes every rank runs the same number of steps (unequal steps hang data-parallel training)
and gets at least one sample per step (given global batch >= world): a batch smaller than `world`
joins the previous global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core import seeds
from core.ranks import SINGLE, DistInfo


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    return seeds.generator("epoch_plan", seed, epoch, stream)


EXEMPLAR_STREAM = 1_000_000          # generator stream of the exemplar draws in share mode
STORED_STREAM = 2_000_000            # generator streams (one a rank) of the real images shown as stored
LAST_BATCH = ("even", "short")       # how an epoch's samples are cut when they do not fill whole batches


def batch_bounds(total: int, global_batch: int, world: int, last_batch: str = "even") -> list[int]:
    """Where each global batch of `total` samples starts, and the end: every batch holds at least `world`
    samples where `total` allows (a smaller one joins the batch before it)."""
    steps = max(1, math.ceil(total / global_batch))
    if last_batch == "even":
        while steps > 1 and total // steps < world:
            steps -= 1
        return [s * total // steps for s in range(steps + 1)]
    if last_batch != "short":
        raise ValueError(f"last_batch must be one of {LAST_BATCH}, got {last_batch!r}")
    bounds = [min(total, s * global_batch) for s in range(steps + 1)]
    if steps > 1 and bounds[-1] - bounds[-2] < world:
        bounds.pop(-2)
    return bounds


def rank_slices(total: int, global_batch: int, rank: int, world: int, perm: torch.Tensor,
                last_batch: str = "even") -> list[torch.Tensor]:
    """This rank's share of each global batch of `perm` (every world-th sample of it)."""
    bounds = batch_bounds(total, global_batch, world, last_batch)
    return [perm[bounds[s]: bounds[s + 1]][rank::world] for s in range(len(bounds) - 1)]


def _split_share(global_batch: int, share: float) -> tuple[int, int]:
    n_ex = min(global_batch - 1, max(1, round(share * global_batch)))
    return global_batch - n_ex, n_ex


def _share_mode(n_real: int, n_ex: int, share: float | None) -> bool:
    return share is not None and n_real > 0 and n_ex > 0


def _share_bounds(n_real: int, real_b: int, ex_b: int, world: int, last_batch: str) -> list[int]:
    """Where the real part of each global batch starts (share mode), and the end."""
    bounds = batch_bounds(n_real, real_b, 1, last_batch)
    if len(bounds) > 2 and bounds[-1] - bounds[-2] + ex_b < world:        # a batch too small to share
        bounds.pop(-2)
    return bounds


def steps_per_epoch(n_real: int, n_ex: int, global_batch: int, world: int, exemplar_share: float | None = None,
                    last_batch: str = "even") -> int:
    if _share_mode(n_real, n_ex, exemplar_share):
        real_b, ex_b = _split_share(global_batch, exemplar_share)
        return len(_share_bounds(n_real, real_b, ex_b, world, last_batch)) - 1
    return len(batch_bounds(n_real + n_ex, global_batch, world, last_batch)) - 1


def epoch_plan(n_real: int, n_ex: int, global_batch: int, dist: DistInfo, seed: int, epoch: int,
               exemplar_share: float | None = None, last_batch: str = "even"
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(real indices, exemplar indices)] of rank `dist.rank` of `dist.world`, one entry per step."""
    rank, world = dist.rank, dist.world
    if n_real + n_ex < world:
        raise ValueError(f"phase has {n_real + n_ex} training samples for {world} ranks")
    if not _share_mode(n_real, n_ex, exemplar_share):
        perm = torch.randperm(n_real + n_ex, generator=epoch_generator(seed, epoch))
        return [(idx[idx < n_real], idx[idx >= n_real] - n_real)
                for idx in rank_slices(n_real + n_ex, global_batch, rank, world, perm, last_batch)]
    real_b, ex_b = _split_share(global_batch, exemplar_share)
    perm = torch.randperm(n_real, generator=epoch_generator(seed, epoch))
    bounds = _share_bounds(n_real, real_b, ex_b, world, last_batch)
    chunks = [perm[bounds[s]: bounds[s + 1]] for s in range(len(bounds) - 1)]   # global real part of each batch
    g = epoch_generator(seed, epoch, EXEMPLAR_STREAM)
    draws = torch.cat([torch.randperm(n_ex, generator=g) for _ in range(math.ceil(len(chunks) * ex_b / n_ex))])
    plan = []
    for s, r in enumerate(chunks):
        both = torch.cat([r, draws[s * ex_b: (s + 1) * ex_b] + n_real])[rank::world]
        plan.append((both[both < n_real], both[both >= n_real] - n_real))
    return plan


@dataclass(frozen=True)
class BatchPlan:
    """How a stage's epochs are cut into batches: the global batch (all ranks together), where this process
    stands (`dist`: its rank, the world size, the device its batches go to), the stage's seed and the
    exemplars' share of a batch (None: exemplars are samples of D_i ∪ E like any other) and how an epoch that
    does not fill whole batches is cut (`last_batch`: LAST_BATCH)."""
    global_batch: int
    seed: int
    dist: DistInfo = SINGLE
    exemplar_share: float | None = None
    last_batch: str = "even"

    def steps(self, n_real: int, n_ex: int) -> int:
        return steps_per_epoch(n_real, n_ex, self.global_batch, self.dist.world, self.exemplar_share,
                               self.last_batch)

    def epoch(self, n_real: int, n_ex: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's [(real indices, exemplar indices)], one entry per step of `epoch`."""
        return epoch_plan(n_real, n_ex, self.global_batch, self.dist, self.seed, epoch, self.exemplar_share,
                          self.last_batch)

    def augment_generator(self, epoch: int) -> torch.Generator:
        """This rank's generator of `epoch`'s augmentation draws (on the CPU)."""
        return epoch_generator(self.seed, epoch, stream=1 + self.dist.rank)

    def stored_generator(self, epoch: int) -> torch.Generator:
        """This rank's generator of `epoch`'s draws of which real images are shown as stored (augment.AsStored)."""
        return epoch_generator(self.seed, epoch, stream=STORED_STREAM + self.dist.rank)
