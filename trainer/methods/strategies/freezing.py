"""Freeze all but chosen parameters for one stage, and restore the exact flags afterwards.

The engine optimises the model's `requires_grad` parameters, so a strategy chooses what a stage
trains by flipping those flags in its stage's `before` and restoring them in `after`. Restoring the
saved flags (rather than setting everything trainable) keeps parameters that were frozen for another
reason frozen: old-class weights (LUCIR), older bias layers (BiC), the previous phase's convolution
weights under weight transfer.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn


def train_only(model: nn.Module, params: Iterable[nn.Parameter]) -> dict[str, bool]:
    """Leave only `params` trainable (those of them that were trainable); returns the saved flags."""
    keep = {id(p) for p in params}
    saved = {}
    for name, p in model.named_parameters():
        saved[name] = p.requires_grad
        p.requires_grad_(p.requires_grad and id(p) in keep)
    return saved


def freeze(model: nn.Module, params: Iterable[nn.Parameter]) -> dict[str, bool]:
    """Freeze `params`; returns the saved flags of all parameters."""
    drop = {id(p) for p in params}
    saved = {}
    for name, p in model.named_parameters():
        saved[name] = p.requires_grad
        if id(p) in drop:
            p.requires_grad_(False)
    return saved


def restore(model: nn.Module, saved: dict[str, bool] | None) -> None:
    if not saved:
        return
    for name, p in model.named_parameters():
        if name in saved:
            p.requires_grad_(saved[name])
