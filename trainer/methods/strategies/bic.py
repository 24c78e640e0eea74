"""BiC (Wu et al., "Large Scale Incremental Learning", CVPR 2019).

Model: the head is wrapped in `BiasCorrectedHead`: the logits of the classes added in each phase pass
through that phase's two-parameter layer alpha·o + beta (identity until trained; older layers stay
fixed, the teacher carries its own).

Stage "train" (phase i > 0): L = λ·L_d + (1-λ)·L_c with λ = |old| / |seen| (BiC Eq. 4); L_c is CE over
all seen classes, L_d the distillation of the old classes' logits against the (bias-corrected) previous
model at temperature T = strategy.bic.kd_temperature (Eq. 3, no T² factor, as in the paper; computed as a
KL, i.e. minus the teacher entropy, same gradient). A class-balanced validation split is held out of the
stage's data. Where it comes from is `strategy.bic.validation`:
- `memory` (default; PyCIL's form): drawn afresh in each phase i > 0, k = round(val_fraction · m) of every old
  class's m stored exemplars (at least 1, leaving at least 1 for training) and k images of every new class. The
  old classes' held-out exemplars were trained on when their class was new.
- `arrival` (FACIL's form, the split of the BiC paper's Fig. 2 kept across phases): `arrival_per_class` images of
  every class are set apart in the phase it arrives (phase 0 too), never trained on, and kept by the strategy
  beside the memory for every later bias stage; the training stage rehearses every stored exemplar. The set costs
  that many images a class on top of the memory: to hold M images a class in all, as FACIL's BiC does, set
  exemplars.per_class to M - arrival_per_class. The memory is still selected from all of D_i, so it may hold a
  held-out image (about one chance in n/m per image, n images of the class).
Either split is cut without decoding the phase (phase_images.narrowed): with DALI both stages stream their part
of the phase from the shards like any other stage, and the arrival set decodes its few images alone.

Stage "bias" (phase i > 0, before the exemplar update): only the newest layer's alpha and beta train
(everything else frozen, BatchNorm statistics included), with CE of the corrected logits on the held-out
split plus the authors' code's penalty beta_l2·β²/2, no weight decay, at the authors' schedule: the rate of
the model's training (0.1), momentum 0.9, 200 epochs. The held-out split is a few images a class, so an epoch
is one or two steps: a shorter or slower schedule leaves the two parameters far from their optimum, and what
the layer then learns is to scale the new classes' logits down, not to shift them (measured on glyphs with
one-class phases: at 0.01 for 50 epochs, α fell to 0.25-0.5 and the new class's accuracy to 0-6 % by the last
phases). BiC replaces the generic balanced fine-tune, so it has none.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from core import seeds
from core.errors import UserError
from data_pipeline.loading.phase_images import in_memory, narrowed
from trainer.methods.losses import kd_kl
from trainer.methods.models.heads import BiasCorrectedHead, LinearHead
from trainer.methods.schedule import step_lr
from trainer.methods.strategies import freezing
from trainer.methods.strategies.base import Batch, Strategy, register
from trainer.methods.strategies.stages import (
    Exemplars,
    Stage,
    StageData,
    StageSpec,
    Train,
)


@dataclass
class BiCSettings:
    val_fraction: float = 0.1            # share of each old class's exemplars held out; as many per new class
    kd_temperature: float = 2.0          # T of BiC's distillation (Eq. 3)
    bias_epochs: int = 200               # second stage: the bias layer on the held-out split (the authors' code)
    bias_lr: float = 0.1                 # the authors' code: the model's starting rate, held constant
    bias_lr_milestones: list[int] = field(default_factory=list)
    beta_l2: float = 0.1                 # the authors' code: + beta_l2·β²/2 on the newest layer's β
    validation: str = "memory"           # the bias stage's split: "memory" (drawn from the stored exemplars each
    #                                      phase) | "arrival" (set apart when a class arrives, kept; module doc)
    arrival_per_class: int = 2           # "arrival": images of each class set apart (FACIL: ceil(0.1 · 20))

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.validation not in VALIDATION:
            raise ValueError(f"validation must be one of {', '.join(VALIDATION)}, got {self.validation!r}")
        if self.arrival_per_class < 1:
            raise ValueError(f"arrival_per_class must be at least 1, got {self.arrival_per_class}")


VALIDATION = ("memory", "arrival")


def balanced_holdout(labels: torch.Tensor, classes: list[int], k: int, g: torch.Generator) -> torch.Tensor:
    """Boolean mask holding out k random samples of each of `classes` (deterministic given g)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in classes:
        idx = torch.nonzero(labels == c).squeeze(1)
        mask[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return mask


class BiCTrain(Train):
    """Stage 1: the usual training stage on what the held-out split leaves."""

    def __init__(self, bic: BiC):
        self.bic = bic

    def data(self, ctx, data: StageData) -> StageData:
        split = self.bic.holdout(ctx, data)
        if split is None:
            return data
        real_val, ex_val = split
        data = replace(data, real_images=narrowed(data.real_images, ~real_val), real_labels=data.real_labels[~real_val])
        if ex_val is None:
            return data
        return replace(data, ex_images=data.ex_images[~ex_val], ex_labels=data.ex_labels[~ex_val])


class BiasCorrection(Stage):
    """Stage 2: only the newest bias layer (alpha, beta) trains, on the held-out split, no weight decay."""
    name = "bias"

    def __init__(self, bic: BiC):
        self.bic = bic
        self._saved = None

    def data(self, ctx, data: StageData) -> StageData:
        if self.bic.settings.validation == "arrival":     # drawn by "train", whose checkpoints keep it for a resume
            return self.bic.arrival_set(ctx.seen_labels)
        split = self.bic.holdout(ctx, data)
        if split is None:
            return StageData(None, None, None, None)
        real_val, ex_val = split
        return replace(data, real_images=narrowed(data.real_images, real_val), real_labels=data.real_labels[real_val],
                       ex_images=data.ex_images[ex_val], ex_labels=data.ex_labels[ex_val])

    def spec(self, ctx) -> StageSpec:
        s, gamma = self.bic.settings, self.bic.setup.lr_gamma
        ms = list(s.bias_lr_milestones)
        return StageSpec(s.bias_epochs, s.bias_lr, lambda e: step_lr(s.bias_lr, e, ms, gamma), weight_decay=0.0)

    def before(self, ctx) -> None:
        params = BiC.bias_parameters(ctx.model)
        for p in params:
            p.requires_grad_(True)
        self._saved = freezing.train_only(ctx.model, params)

    def after(self, ctx) -> None:
        freezing.restore(ctx.model, self._saved)
        self._saved = None
        for p in BiC.bias_parameters(ctx.model):
            p.requires_grad_(False)

    def loss(self, strategy, model, batch: Batch) -> dict[str, torch.Tensor]:
        model.backbone.eval()                 # frozen features: no BatchNorm statistics updates
        with torch.no_grad():
            f = model.features(batch.x)
        ce = F.cross_entropy(model.head(f)[:, : strategy.num_seen], batch.y)
        beta = model.head.betas[-1]
        return {"loss": ce + strategy.settings.beta_l2 * (beta ** 2).sum() / 2, "ce": ce}


@register
class BiC(Strategy):
    name = "bic"
    Settings = BiCSettings
    before_keys = {"beta_l2": 0.0}       # a stored config without it ran the bias stage without the penalty
    balanced_finetune = False

    def __init__(self, settings=None, setup=None):
        super().__init__(settings, setup)
        self._split: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._arrival: dict[int, torch.Tensor] = {}      # "arrival": label -> its held-out images (uint8, CPU)

    def build_model(self):
        net = super().build_model()
        net.head = BiasCorrectedHead(LinearHead(net.backbone.out_dim))
        return net

    @staticmethod
    def bias_parameters(model) -> list[torch.nn.Parameter]:
        """The newest bias layer's two parameters (alpha, beta)."""
        return [model.head.alphas[-1], model.head.betas[-1]]

    def before_phase(self, ctx) -> None:
        super().before_phase(ctx)
        self._split = None
        head = ctx.model.head
        for p in list(head.alphas) + list(head.betas):
            p.requires_grad_(False)          # identity during "train"; only the "bias" stage moves them

    def stages(self, ctx) -> list[Stage]:
        if ctx.phase == 0:
            return [BiCTrain(self), Exemplars()] if self.uses_exemplars else [BiCTrain(self)]
        stages = [BiCTrain(self), BiasCorrection(self)]
        return stages + [Exemplars()] if self.uses_exemplars else stages

    def holdout(self, ctx, data: StageData) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(real mask, exemplar mask) of the phase's class-balanced validation split, drawn once per
        phase (a resumed phase draws the same); None in phase 0 or without old exemplars. "arrival": the real
        mask of the new classes' set-apart images (every phase), no exemplar mask, and those images kept."""
        if self.settings.validation == "arrival":
            return self._arrive(ctx, data)
        if ctx.phase == 0 or data.ex_labels is None or data.real_labels is None:
            return None
        if self._split is None:
            counts = [int((data.ex_labels == c).sum()) for c in ctx.old_labels]
            m = min(counts) if counts else 0
            k = min(max(1, round(self.settings.val_fraction * m)), m - 1)
            if k <= 0:
                return None
            g = seeds.generator("bic_holdout", self.setup.seed, ctx.phase)
            self._split = (balanced_holdout(data.real_labels, ctx.new_labels, k, g),
                           balanced_holdout(data.ex_labels, ctx.old_labels, k, g))
        return self._split

    def _arrive(self, ctx, data: StageData) -> tuple[torch.Tensor, None] | None:
        if data.real_labels is None:
            return None
        if self._split is None:
            k = self.settings.arrival_per_class
            for c in ctx.new_labels:
                n = int((data.real_labels == c).sum())
                if n <= k:
                    raise UserError(f"strategy.bic.arrival_per_class={k} leaves class {c} (of phase {ctx.phase}) "
                                     f"no training image: it has {n}; lower it")
            mask = balanced_holdout(data.real_labels, ctx.new_labels, k,
                                    seeds.generator("bic_holdout", self.setup.seed, ctx.phase))
            images, labels = in_memory(narrowed(data.real_images, mask)), data.real_labels[mask]   # those alone
            for c in ctx.new_labels:                  # the same images again on a resume: a set, by label
                self._arrival[c] = images[labels == c].to("cpu", copy=True)
            self._split = (mask, None)
        return self._split

    def arrival_set(self, labels: list[int]) -> StageData:
        """The set-apart images of `labels` ("arrival"), as a stage's real data."""
        missing = [c for c in labels if c not in self._arrival]
        if missing:
            raise RuntimeError(f"BiC holds no set-apart images of classes {missing}: a run that kept its validation "
                               "in the memory cannot continue with strategy.bic.validation=arrival")
        images = torch.cat([self._arrival[c] for c in labels])
        ys = torch.tensor(labels).repeat_interleave(torch.tensor([len(self._arrival[c]) for c in labels]))
        return StageData(images, ys, None, None)

    def state_dict(self) -> dict:
        sd = super().state_dict()
        return {**sd, "bic_arrival": dict(self._arrival)} if self.settings.validation == "arrival" else sd

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        self._arrival = dict(sd.get("bic_arrival", {}))

    def loss(self, model, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        logits = model(batch.x)[:, : self.num_seen]
        ce = F.cross_entropy(logits, batch.y)
        if not stage.distills or self.teacher is None or self.num_old == 0:
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            old = self.teacher(batch.x)[:, : self.num_old]
        kd = kd_kl(logits[:, : self.num_old], old, self.settings.kd_temperature, tau_squared=False)
        lam = self.num_old / self.num_seen
        return {"loss": lam * kd + (1 - lam) * ce, "ce": ce, "kd": kd}
