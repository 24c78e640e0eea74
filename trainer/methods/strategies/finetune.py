"""Fine-tuning: CE on the new classes' data only, no exemplars, no distillation (the lower bound)."""
from __future__ import annotations

import torch.nn.functional as F

from trainer.methods.strategies.base import Batch, Strategy, register


@register
class Finetune(Strategy):
    name = "finetune"
    uses_exemplars = False
    uses_teacher = False             # no distillation: no copy of the previous model

    def loss(self, model, batch: Batch, stage):
        ce = F.cross_entropy(model(batch.x)[:, : self.num_seen], batch.y)
        return {"loss": ce, "ce": ce}
