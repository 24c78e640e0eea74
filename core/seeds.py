"""Every random stream of a run, derived from the run's seed in one place.

A stream is a name and the integers that tell its draws apart (phase, class label, epoch, ...). The
formulas are the ones every figure in docs/results.md was made with: changing one changes results
and breaks "a resumed run equals an uninterrupted one" for run directories already on disk, so a new
stream gets a new name here rather than a new formula somewhere else.
"""
from __future__ import annotations

import torch

_FORMULAS = {
    # head columns added at a phase (their initialisation)
    "head": lambda seed, phase: seed * 7919 + phase,
    # BiC's class-balanced validation split of a phase
    "bic_holdout": lambda seed, phase: seed * 7919 + phase * 31 + 17,
    # the epoch plans of a phase's training stages (batch_plan.py mixes the epoch in, below)
    "stage_batches": lambda seed, phase: seed * 100 + phase,
    "epoch_plan": lambda seed, epoch, stream: (seed * 1_000_003 + epoch * 9_176 + stream) % (2**63),
    # the DALI train pipeline's crop windows, translations and flips of one rank's epoch (dali_draws.py)
    "dali_draws": lambda seed, epoch, rank: (seed * 1_000_003 + epoch * 9_176 + rank) * 7 + 3,
    # exemplar level, per class (a group's first): 0 random initial subset, 1 real batches of the meta-loss,
    # 2 adjustment folds, 3 augmentation of a selection, 4 fresh embedders (matching), 5 augmentation of an adjustment
    "exemplars": lambda seed, phase, label, stream: ((seed * 1_000_003 + phase) * 10_007 + label) * 13 + stream,
}
STREAMS = tuple(_FORMULAS)


def seed_of(stream: str, *parts: int) -> int:
    """The seed of `stream` for `parts`, e.g. seed_of("exemplars", seed, phase, label, 0)."""
    if stream not in _FORMULAS:
        raise KeyError(f"unknown random stream '{stream}' (known: {', '.join(STREAMS)})")
    return _FORMULAS[stream](*parts)


def generator(stream: str, *parts: int) -> torch.Generator:
    """A fresh CPU generator for `stream` (never the global RNG)."""
    return torch.Generator().manual_seed(seed_of(stream, *parts))
