"""Learning rates as pure functions of (stage, epoch): no scheduler state to checkpoint."""
from __future__ import annotations


def step_lr(base: float, epoch: int, milestones: list[int], gamma: float, warmup: int = 0) -> float:
    if warmup and epoch < warmup:
        return base * (epoch + 1) / warmup
    return base * gamma ** sum(epoch >= m for m in milestones)


def scaled_milestones(milestones: list[int], from_epochs: int, to_epochs: int) -> list[int]:
    """Milestones written for `from_epochs` epochs, moved proportionally to a `to_epochs` stage."""
    if from_epochs == to_epochs:
        return list(milestones)
    return [round(m * to_epochs / from_epochs) for m in milestones]
