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

import torch
import torch.nn.functional as F

from trainer.methods.losses import kd_kl, lwf_mc_loss
from trainer.methods.strategies.base import Batch, Strategy
from trainer.methods.strategies.registry import register


def eq5_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_old: torch.Tensor | None, num_old: int,
             lam: float, tau: float) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(logits, labels)
    if teacher_old is None or num_old == 0:
        return {"loss": ce, "ce": ce}
    kd = kd_kl(logits[:, :num_old], teacher_old, tau)
    return {"loss": lam * ce + (1 - lam) * kd, "ce": ce, "kd": kd}


@register
class LwF(Strategy):
    name = "lwf"
    distill_loss_key = "lwf"          # which strategy.<section>.loss selects softmax/sigmoid

    def teacher_old_logits(self, x: torch.Tensor, stage: str) -> torch.Tensor | None:
        if stage != "train" or self.teacher is None or self.num_old == 0:
            return None
        with torch.no_grad():
            return self.teacher(x)[:, : self.num_old]

    def loss(self, model, batch: Batch, stage: str) -> dict[str, torch.Tensor]:
        logits = model(batch.x)[:, : self.num_seen]
        old = self.teacher_old_logits(batch.x, stage)
        if getattr(self.cfg.strategy, self.distill_loss_key).loss == "sigmoid":
            return lwf_mc_loss(logits, batch.y, old, self.num_old)
        t = self.cfg.train
        return eq5_loss(logits, batch.y, old, self.num_old, t.kd_lambda, t.kd_temperature)
