"""The steps of a phase as small objects: what a stage trains, on which data, with which schedule.

A strategy lists its stages (`Strategy.stages`); the run executes them in order, each through the runner
of its `kind` (trainer/run/stage_runners.py). A model-level stage (`kind = "model"`) is run through the
engine: the run builds its data (`StageData`: the phase's real images and the old exemplars, or only
exemplars for the balanced fine-tune), lets the stage narrow it (`data`), lets it change the model from
that data before training (`prepare`: LUCIR imprints new-class weights), asks its schedule (`spec`; None
means the run's default for "train" and "balanced_finetune"), calls `before`, trains with `loss`, then
calls `after`. The exemplar stage (`kind = "exemplars"`) marks where the run updates the exemplar memory.

A method's own stage is a subclass in the method's module (BiC's bias correction), so its data,
schedule, frozen parameters and loss live in one class instead of `if stage == ...` branches.
Stage names are stored in in-phase checkpoints: they must stay stable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from data_pipeline.loading.loaders import StageData

if TYPE_CHECKING:
    from trainer.methods.strategies.base import Batch, PhaseContext, Strategy


@dataclass
class StageSpec:
    """How a stage is run: epochs, starting lr, lr as a function of the epoch, and the weight decay
    when it differs from train.weight_decay (e.g. BiC's bias layer: none)."""
    epochs: int
    lr: float
    lr_at: Callable[[int], float]
    weight_decay: float | None = None


class Stage:
    name: ClassVar[str] = "stage"
    kind: ClassVar[str] = "model"          # the runner that runs it: "model" (the engine) | "exemplars"
    distills: ClassVar[bool] = False       # whether the strategy's loss distils from Θ_{i-1} here
    rehearses: ClassVar[bool] = True       # the run's data: D_i and the old exemplars (else: all exemplars)
    # the phase's main training on D_i: phase 0's may be reused from another run (train.base_from), and its
    # epochs are the ones a selection's snapshot of the model counts
    main: ClassVar[bool] = False

    def spec(self, ctx: PhaseContext) -> StageSpec | None:
        return None

    def data(self, ctx: PhaseContext, data: StageData) -> StageData:
        return data

    def prepare(self, ctx: PhaseContext, data: StageData) -> None:
        """Change the model from the stage's data before anything trains (default: nothing)."""

    def before(self, ctx: PhaseContext) -> None:
        """E.g. freeze everything but a bias layer; the engine optimises only requires_grad parameters."""

    def after(self, ctx: PhaseContext) -> None:
        """Undo what `before` did."""

    def loss(self, strategy: Strategy, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return strategy.loss(model, batch, self)

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


class Train(Stage):
    """Model-level training on D_i ∪ E_{0:i-1} (Eq. 5-6), train.* hyperparameters by default."""
    name = "train"
    distills = True
    main = True


class Exemplars(Stage):
    """The exemplar level: select (or optimise) new exemplars, adjust old ones, trim to the budget."""
    name = "exemplars"
    kind = "exemplars"


class BalancedFinetune(Stage):
    """Algorithm 1 step 18: the exemplars of all seen classes only, train.finetune_* by default."""
    name = "balanced_finetune"
    rehearses = False
