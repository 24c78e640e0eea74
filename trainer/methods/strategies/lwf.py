"""LwF, class-incremental with exemplars (LwF-MC; the mnemonics paper's Table 1 adds herding
exemplars to it "for fair comparison").

`strategy.lwf.loss=softmax` (default) is the mnemonics paper's model-level loss, Eq. 5:
λ·CE + (1-λ)·KD(τ), CE over all seen classes on D_i ∪ E_{0:i-1}, KD on the old classes' logits
against Θ_{i-1} (train.kd_lambda, train.kd_temperature). KD is computed as KL(teacher‖student)·τ²:
Eq. 1 minus the teacher's entropy, which has the same gradient and reads zero when the student equals
the teacher. `strategy.lwf.loss=sigmoid` is LwF-MC as iCaRL implements it (per-class binary
cross-entropy, the teacher's sigmoid outputs as targets on the old classes): LwM's baseline.
The balanced fine-tune on exemplars uses the classification term only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import check_choice
from trainer.methods.losses import kd_kl, lwf_mc_loss
from trainer.methods.strategies.base import Batch, Strategy, register
from trainer.methods.strategies.stages import Stage


def eq5_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_old: torch.Tensor | None, num_old: int,
             lam: float, tau: float) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(logits, labels)
    if teacher_old is None or num_old == 0:
        return {"loss": ce, "ce": ce}
    kd = kd_kl(logits[:, :num_old], teacher_old, tau)
    return {"loss": lam * ce + (1 - lam) * kd, "ce": ce, "kd": kd}


@dataclass
class LwFSettings:
    # softmax: the mnemonics paper's Eq. 5, lambda*CE + (1-lambda)*KD(tau) with train.kd_lambda/kd_temperature;
    # sigmoid: LwF-MC as iCaRL implements it (per-class BCE, sigmoid targets from the teacher)
    loss: str = "softmax"

    def __post_init__(self):
        check_choice("loss", self.loss, ("softmax", "sigmoid"))


@register
class LwF(Strategy):
    name = "lwf"
    Settings = LwFSettings

    def teacher_old_logits(self, x: torch.Tensor, stage: Stage) -> torch.Tensor | None:
        if not stage.distills or self.teacher is None or self.num_old == 0:
            return None
        with torch.no_grad():
            return self.teacher(x)[:, : self.num_old]

    def loss(self, model, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        logits = model(batch.x)[:, : self.num_seen]
        old = self.teacher_old_logits(batch.x, stage)
        if self.settings.loss == "sigmoid":
            return lwf_mc_loss(logits, batch.y, old, self.num_old)
        return eq5_loss(logits, batch.y, old, self.num_old, self.setup.kd_lambda, self.setup.kd_temperature)
