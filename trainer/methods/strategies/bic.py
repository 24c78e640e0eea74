"""BiC (Wu et al., "Large Scale Incremental Learning", CVPR 2019).

Model: the head is wrapped in `BiasCorrectedHead`: the logits of the classes added in each phase pass
through that phase's two-parameter layer alpha·o + beta (identity until trained; older layers stay
fixed, the teacher carries its own).

Stage "train" (phase i > 0): L = λ·L_d + (1-λ)·L_c with λ = |old| / |seen| (BiC Eq. 4); L_c is CE over
all seen classes, L_d the distillation of the old classes' logits against the (bias-corrected) previous
model at temperature T = strategy.bic.kd_temperature (Eq. 3, no T² factor, as in the paper; computed as a
KL, i.e. minus the teacher entropy, same gradient). A class-balanced validation split is held out of the
stage's data: k = round(val_fraction · m) exemplars of every old class (m: exemplars per old class, at
least 1, leaving at least 1 for training) and k images of every new class.

Stage "bias" (phase i > 0, before the exemplar update): only the newest layer's alpha and beta train
(everything else frozen, BatchNorm statistics included), with CE of the corrected logits on the held-out
split; no weight decay. BiC replaces the generic balanced fine-tune, so it has none.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.methods.losses import kd_kl
from trainer.methods.models.heads import BiasCorrectedHead, LinearHead
from trainer.methods.schedule import step_lr
from trainer.methods.strategies import freezing
from trainer.methods.strategies.base import Batch, StageData, StageSpec, Strategy
from trainer.methods.strategies.registry import register


def balanced_holdout(labels: torch.Tensor, classes: list[int], k: int, g: torch.Generator) -> torch.Tensor:
    """Boolean mask holding out k random samples of each of `classes` (deterministic given g)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in classes:
        idx = torch.nonzero(labels == c).squeeze(1)
        mask[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return mask


@register
class BiC(Strategy):
    name = "bic"
    balanced_finetune = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self._split: tuple[torch.Tensor, torch.Tensor] | None = None
        self._saved = None

    def build_model(self, cfg):
        net = super().build_model(cfg)
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

    def stages(self, ctx) -> list[str]:
        if not self.uses_exemplars:
            return ["train", "bias"] if ctx.phase > 0 else ["train"]
        return ["train", "bias", "exemplars"] if ctx.phase > 0 else ["train", "exemplars"]

    # -- the held-out split -----------------------------------------------------------------------
    def _holdout(self, ctx, data: StageData) -> tuple[torch.Tensor, torch.Tensor] | None:
        if ctx.phase == 0 or data.ex_labels is None or data.real_labels is None:
            return None
        if self._split is None:
            counts = [int((data.ex_labels == c).sum()) for c in ctx.old_labels]
            m = min(counts) if counts else 0
            k = min(max(1, round(self.cfg.strategy.bic.val_fraction * m)), m - 1)
            if k <= 0:
                return None
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + ctx.phase * 31 + 17)
            self._split = (balanced_holdout(data.real_labels, ctx.new_labels, k, g),
                           balanced_holdout(data.ex_labels, ctx.old_labels, k, g))
        return self._split

    def stage_data(self, stage, ctx, data: StageData) -> StageData:
        split = self._holdout(ctx, data) if stage in ("train", "bias") else None
        if split is None:
            return data if stage != "bias" else StageData(None, None, None, None)
        real_val, ex_val = split
        keep_real, keep_ex = (real_val, ex_val) if stage == "bias" else (~real_val, ~ex_val)
        return StageData(data.real_images[keep_real], data.real_labels[keep_real],
                         data.ex_images[keep_ex], data.ex_labels[keep_ex])

    def stage_spec(self, stage, ctx) -> StageSpec | None:
        if stage != "bias":
            return None
        s = self.cfg.strategy.bic
        ms = list(s.bias_lr_milestones)
        return StageSpec(s.bias_epochs, s.bias_lr, lambda e: step_lr(s.bias_lr, e, ms, self.cfg.train.lr_gamma),
                         weight_decay=0.0)

    def before_stage(self, stage, ctx) -> None:
        if stage == "bias":
            params = self.bias_parameters(ctx.model)
            for p in params:
                p.requires_grad_(True)
            self._saved = freezing.train_only(ctx.model, params)

    def after_stage(self, stage, ctx) -> None:
        if stage == "bias":
            freezing.restore(ctx.model, self._saved)
            self._saved = None
            for p in self.bias_parameters(ctx.model):
                p.requires_grad_(False)

    # -- per batch -----------------------------------------------------------------------------------
    def loss(self, model, batch: Batch, stage: str) -> dict[str, torch.Tensor]:
        if stage == "bias":
            model.backbone.eval()                 # frozen features: no BatchNorm statistics updates
            with torch.no_grad():
                f = model.features(batch.x)
            ce = F.cross_entropy(model.head(f)[:, : self.num_seen], batch.y)
            return {"loss": ce, "ce": ce}
        logits = model(batch.x)[:, : self.num_seen]
        ce = F.cross_entropy(logits, batch.y)
        if stage != "train" or self.teacher is None or self.num_old == 0:
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            old = self.teacher(batch.x)[:, : self.num_old]
        kd = kd_kl(logits[:, : self.num_old], old, self.cfg.strategy.bic.kd_temperature, tau_squared=False)
        lam = self.num_old / self.num_seen
        return {"loss": lam * kd + (1 - lam) * ce, "ce": ce, "kd": kd}
