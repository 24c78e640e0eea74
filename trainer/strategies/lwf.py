"""LwF with exemplars (the mnemonics paper's model-level loss, Eq. 5): λ·CE + (1-λ)·KD(τ).

CE over all seen classes on D_i ∪ E_{0:i-1}; KD on the old classes' logits against Θ_{i-1}. The
balanced fine-tune on exemplars uses CE only (the paper fine-tunes with the temporary model's loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.losses import kd_loss
from trainer.strategies.base import Batch, Strategy
from trainer.strategies.registry import register


@register
class LwF(Strategy):
    name = "lwf"

    def loss(self, model, batch: Batch, stage: str) -> dict[str, torch.Tensor]:
        logits = model(batch.x)[:, : self.num_seen]
        ce = F.cross_entropy(logits, batch.y)
        if stage != "train" or self.teacher is None:
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            old = self.teacher(batch.x)[:, : self.num_old]
        kd = kd_loss(logits[:, : self.num_old], old, self.cfg.train.kd_temperature)
        lam = self.cfg.train.kd_lambda
        return {"loss": lam * ce + (1 - lam) * kd, "ce": ce, "kd": kd}
