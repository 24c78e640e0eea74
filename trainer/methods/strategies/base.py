"""The Strategy interface: how a class-incremental method plugs into the run.

A strategy never calls backward(), optimizer.step(), .cuda() or torch.distributed: it grows and
prepares the model, lists the phase's stages, returns losses for batches, and predicts. Exemplar
selection (random, herding, mnemonics) is orthogonal and owned by the run, so any strategy runs with
any selection. A strategy module owns its hyperparameters: `Settings`, a dataclass mounted at
`strategy.<name>` in the config; it is handed those settings and the few run-wide values in
`MethodSetup`, never the whole config.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from core import seeds
from core.protocol import PhasePlan
from core.registry import Plugin, Registry
from exemplars.memory import ExemplarMemory
from trainer.methods.strategies.stages import BalancedFinetune, Exemplars, Stage, Train

REGISTRY = Registry("strategy.name", "trainer.methods.strategies", skip=("base", "stages", "freezing"))
register = REGISTRY.register


@dataclass(frozen=True)
class MethodSetup:
    """What a strategy may read of the run beyond its own settings."""
    seed: int = 0
    arch: str = "resnet32"               # model.arch
    preset: str = "glyphs"               # data.preset (flips, stems)
    image_size: int = 32                 # data.image_size
    kd_lambda: float = 0.5               # train.kd_lambda (Eq. 5)
    kd_temperature: float = 2.0          # train.kd_temperature (Eq. 1)
    lr_gamma: float = 0.1                # train.lr_gamma (a method's own stage schedules)
    feature_batch_size: int = 256        # eval.batch_size (feature extraction)


@dataclass
class PhaseContext:
    phase: int
    plan: PhasePlan
    model: nn.Module
    device: torch.device
    memory: ExemplarMemory | None = None
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


class Strategy(Plugin):
    """A strategy's `Settings` are mounted at strategy.<name>."""
    uses_exemplars: ClassVar[bool] = True        # rehearse E_{0:i-1} and keep a memory
    balanced_finetune: ClassVar[bool] = True     # Algorithm 1 step 18
    uses_teacher: ClassVar[bool] = True          # keep Θ_{i-1} frozen for distillation

    def __init__(self, settings=None, setup: MethodSetup | None = None):
        super().__init__(settings)
        self.setup = setup or MethodSetup()
        self.teacher: nn.Module | None = None
        self.num_old = 0
        self.num_seen = 0

    # -- model -------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The network this method trains (a fresh one, no classes yet). LUCIR: cosine head without
        the last ReLU; BiC: bias-correction layers around the head. The run grows its head once per
        phase (also when rebuilding a sealed phase), so per-phase head parts line up on resume."""
        from trainer.methods.models.net import IncrementalNet

        return IncrementalNet(self.setup.arch, self.setup.preset)

    # -- phase hooks -------------------------------------------------------------------------
    def before_phase(self, ctx: PhaseContext) -> None:
        """Default: keep Θ_{i-1} as a frozen teacher (if the method distils), then append the new classes."""
        self.num_old = len(ctx.old_labels)
        self.num_seen = len(ctx.seen_labels)
        self.teacher = frozen_copy(ctx.model) if ctx.phase > 0 and self.uses_teacher else None
        ctx.model.head.grow(len(ctx.new_labels), generator=seeds.generator("head", self.setup.seed, ctx.phase))

    def train_labels(self, ctx: PhaseContext) -> list[int]:
        """Classes whose real data the phase trains on (joint: all seen classes)."""
        return ctx.new_labels

    def stages(self, ctx: PhaseContext) -> list[Stage]:
        """The phase's steps in order (stages.py): train, then the exemplar level, then the balanced
        fine-tune in incremental phases."""
        if not self.uses_exemplars:
            return [Train()]
        stages = [Train(), Exemplars()]
        if self.balanced_finetune and ctx.phase > 0:
            stages.append(BalancedFinetune())
        return stages

    def after_phase(self, ctx: PhaseContext) -> None:
        self.teacher = None          # free memory; rebuilt from the sealed model next phase

    def incremental_lr(self) -> float | None:
        """The method's own starting rate of its incremental phases' training, where its paper gives one (None:
        train.lr); train.incremental_lr, when set, takes precedence."""
        return None

    # -- per batch ---------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)[:, : self.num_seen]

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"num_old": self.num_old, "num_seen": self.num_seen}

    def load_state_dict(self, sd: dict) -> None:
        self.num_old, self.num_seen = sd["num_old"], sd["num_seen"]
