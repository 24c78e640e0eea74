"""Joint training: every phase trains on all data of all seen classes (the upper bound)."""
from __future__ import annotations

from trainer.methods.strategies.base import register
from trainer.methods.strategies.finetune import Finetune


@register
class Joint(Finetune):
    name = "joint"

    def train_labels(self, ctx):
        return ctx.seen_labels
