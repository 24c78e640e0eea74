"""The Strategy interface: how a class-incremental method plugs into the phase driver.

A strategy never calls backward(), optimizer.step(), .cuda() or torch.distributed: it grows and
prepares the model, returns losses for batches, and predicts. Exemplar selection (random, herding,
mnemonics) is orthogonal and owned by the driver, so any strategy runs with any selection.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from core.protocol import PhasePlan
from data_pipeline.loading.phase_images import PhaseImages


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
class StageSpec:
    """How the driver runs a stage: epochs, starting lr, lr as a function of the epoch, and the weight
    decay when it differs from train.weight_decay (e.g. BiC's bias layer: none)."""
    epochs: int
    lr: float
    lr_at: Callable[[int], float]
    weight_decay: float | None = None


@dataclass
class StageData:
    """Training data of a stage: real images (uint8) and exemplar tensors (float), with labels.

    `real_images` is a uint8 tensor, or the driver's lazily decoded PhaseImages (indexing it with a
    mask or index tensor decodes only the classes selected; `.images` decodes all of it)."""
    real_images: torch.Tensor | PhaseImages | None
    real_labels: torch.Tensor | None
    ex_images: torch.Tensor | None
    ex_labels: torch.Tensor | None

    def __len__(self) -> int:
        return sum(len(t) for t in (self.real_labels, self.ex_labels) if t is not None)


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
    uses_teacher: ClassVar[bool] = True          # keep Θ_{i-1} frozen for distillation

    def __init__(self, cfg):
        self.cfg = cfg
        self.teacher: nn.Module | None = None
        self.num_old = 0
        self.num_seen = 0

    # -- model -------------------------------------------------------------------------------
    def build_model(self, cfg) -> nn.Module:
        """The network this method trains (a fresh one, no classes yet). LUCIR: cosine head without
        the last ReLU; BiC: bias-correction layers around the head. The driver grows its head once per
        phase (also when rebuilding a sealed phase), so per-phase head parts line up on resume."""
        from trainer.methods.models.net import IncrementalNet

        return IncrementalNet(cfg.model.arch, cfg.data.preset)

    # -- phase hooks -------------------------------------------------------------------------
    def before_phase(self, ctx: PhaseContext) -> None:
        """Default: keep Θ_{i-1} as a frozen teacher (if the method distils), then append the new classes."""
        self.num_old = len(ctx.old_labels)
        self.num_seen = len(ctx.seen_labels)
        self.teacher = frozen_copy(ctx.model) if ctx.phase > 0 and self.uses_teacher else None
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + ctx.phase)
        ctx.model.head.grow(len(ctx.new_labels), generator=g)

    def train_labels(self, ctx: PhaseContext) -> list[int]:
        """Classes whose real data the phase trains on (joint: all seen classes)."""
        return ctx.new_labels

    def stages(self, ctx: PhaseContext) -> list[str]:
        """The phase's steps in order. "exemplars" marks where the driver updates the memory
        (select/optimise new, adjust old, trim); the driver knows "train" (D ∪ E_old, train.*
        hyperparameters) and "balanced_finetune" (exemplars of all seen classes, train.finetune_*);
        any other stage needs `stage_spec` and `stage_data` from the strategy."""
        if not self.uses_exemplars:
            return ["train"]
        stages = ["train", "exemplars"]
        if self.balanced_finetune and ctx.phase > 0:
            stages.append("balanced_finetune")
        return stages

    def stage_spec(self, stage: str, ctx: PhaseContext) -> StageSpec | None:
        """Epochs and learning rates of `stage`; None = the driver's default for train/balanced_finetune."""
        return None

    def stage_data(self, stage: str, ctx: PhaseContext, data: StageData) -> StageData:
        """Change a stage's data (e.g. BiC holds out a validation split); default: as the driver built it."""
        return data

    def before_stage(self, stage: str, ctx: PhaseContext) -> None:
        """E.g. freeze everything but a bias layer; the engine optimises only requires_grad parameters."""

    def after_stage(self, stage: str, ctx: PhaseContext) -> None:
        """Undo what before_stage did."""

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
