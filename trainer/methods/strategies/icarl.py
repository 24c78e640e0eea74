"""iCaRL (Rebuffi et al., CVPR 2017): representation learning with distillation, and classification by
the nearest mean of exemplars (NME).

Loss (`strategy.icarl.loss=sigmoid`, default): iCaRL's Algorithm 3, per-class binary cross-entropy
with one-hot targets on the new classes and the previous model's sigmoid outputs as targets on the
old ones (trainer.methods.losses.lwf_mc_loss). `loss=softmax` uses Eq. 5 instead (CE + KD, as the iCaRL of
the LUCIR/mnemonics code base).

Prediction: after each phase the class means are computed from the exemplar memory: for every class,
the mean of the L2-normalised features of its exemplars and the mean of those of their horizontal
flips are averaged and L2-normalised (iCaRL's code, as LUCIR's `class_means`). Flips follow the data
preset (glyphs: none, a mirrored character is another character). A test image goes to the class whose
mean is nearest to its L2-normalised feature; `predict` returns -||φ(x) - μ_c||², so argmax is the
nearest mean. Classes without exemplars (memory 0) fall back to the network's head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.loading.augment import FLIP
from exemplars.features import class_means, nme_scores
from trainer.methods.strategies.base import register
from trainer.methods.strategies.lwf import LwF, LwFSettings


@dataclass
class ICaRLSettings(LwFSettings):
    # sigmoid: iCaRL's own loss (Algorithm 3); softmax: Eq. 5 (the iCaRL of the LUCIR/mnemonics code base)
    loss: str = "sigmoid"


@register
class ICaRL(LwF):
    name = "icarl"
    Settings = ICaRLSettings

    def __init__(self, settings=None, setup=None):
        super().__init__(settings, setup)
        self.means: torch.Tensor | None = None

    def before_phase(self, ctx) -> None:
        super().before_phase(ctx)
        self.means = None

    def after_phase(self, ctx) -> None:
        super().after_phase(ctx)
        self.means = None
        if ctx.memory is not None and self.uses_exemplars:
            means = class_means(ctx.model, ctx.memory.view(ctx.seen_labels), ctx.seen_labels, ctx.device,
                                FLIP[self.setup.preset], self.setup.feature_batch_size)
            self.means = None if means is None else means.to(ctx.device)

    def predict(self, model, x: torch.Tensor) -> torch.Tensor:
        if self.means is None:
            return super().predict(model, x)
        return nme_scores(model.features(x), self.means)
