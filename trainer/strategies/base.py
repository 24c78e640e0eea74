"""The Strategy interface: how a class-incremental method plugs into the phase driver.

A strategy never calls backward(), optimizer.step(), .cuda() or torch.distributed: it grows and
prepares the model, returns losses for batches, and predicts. Exemplar selection (random, herding,
mnemonics) is orthogonal and owned by the driver, so any strategy runs with any selection.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from data_pipeline.protocol import PhasePlan


@dataclass
class PhaseContext:
    phase: int
    plan: PhasePlan
    model: nn.Module
    cfg: Any                               # trainer.config.Config
    device: torch.device
    memory: Any = None                     # exemplars.memory.ExemplarMemory
    extra: dict = field(default_factory=dict)

    @property
    def new_labels(self) -> list[int]:
        return self.plan.new_labels(self.phase)

    @property
    def old_labels(self) -> list[int]:
        return self.plan.old_labels(self.phase)

    @property
    def seen_labels(self) -> list[int]:
        return self.plan.seen_labels(self.phase)


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor


def frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Strategy:
    name: ClassVar[str] = "base"
    uses_exemplars: ClassVar[bool] = True        # rehearse E_{0:i-1} and keep a memory
    balanced_finetune: ClassVar[bool] = True     # Algorithm 1 step 18

    def __init__(self, cfg):
        self.cfg = cfg
        self.teacher: nn.Module | None = None
        self.num_old = 0
        self.num_seen = 0

    # -- phase hooks -------------------------------------------------------------------------
    def before_phase(self, ctx: PhaseContext) -> None:
        """Default: keep Θ_{i-1} as a frozen teacher, then append the new classes to the head."""
        self.num_old = len(ctx.old_labels)
        self.num_seen = len(ctx.seen_labels)
        self.teacher = frozen_copy(ctx.model) if ctx.phase > 0 else None
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + ctx.phase)
        ctx.model.head.grow(len(ctx.new_labels), generator=g)

    def train_labels(self, ctx: PhaseContext) -> list[int]:
        """Classes whose real data the phase trains on (joint: all seen classes)."""
        return ctx.new_labels

    def stages(self, ctx: PhaseContext) -> list[str]:
        """Model-level stages; exemplars are updated after "train", before "balanced_finetune"."""
        stages = ["train"]
        if self.uses_exemplars and self.balanced_finetune and ctx.phase > 0:
            stages.append("balanced_finetune")
        return stages

    def after_phase(self, ctx: PhaseContext) -> None:
        self.teacher = None          # free memory; rebuilt from the sealed model next phase

    # -- per batch ---------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, stage: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)[:, : self.num_seen]

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"num_old": self.num_old, "num_seen": self.num_seen}

    def load_state_dict(self, sd: dict) -> None:
        self.num_old, self.num_seen = sd["num_old"], sd["num_seen"]
