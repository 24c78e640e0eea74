"""LUCIR (Hou et al., "Learning a Unified Classifier Incrementally via Rebalancing", CVPR 2019).

Model: a cosine-normalised classifier with a learnable scale σ (`CosineHead`) on the features of the
last residual block taken before its ReLU (LUCIR's modified ResNet).

Phase 0: CE on σ·cos. Incremental phases (the authors' code, `incremental_train_and_eval_MR_LF`):
  - imprinted weights: each new class's weight is the L2-normalised mean of the L2-normalised features
    of its training images, scaled to the mean norm of the old weights (before training);
  - the old classes' weights stay fixed (LUCIR trains them with lr 0); σ and the new weights train;
  - less-forget constraint: λ · mean(1 - cos(f(x), f*(x))) between the normalised features of the model
    and of the previous model, λ = λ_base · sqrt(|old| / |new|) (adaptive, `strategy.lucir.adaptive_lambda`);
  - margin ranking: for every sample of an old class, its ground-truth cosine score should exceed each
    of the top-K new-class cosine scores by the margin m: mean(max(0, m - s_gt + s_hard));
  - L = λ·L_dis + CE + w_mr·L_mr.
Class-balanced fine-tuning (the generic "balanced_finetune" stage, with LUCIR's own schedule
`strategy.lucir.cbf_*`): on the exemplars of all seen classes, the feature extractor frozen (BatchNorm
statistics too) and all classifier weights and σ trained with the same loss (LUCIR's ft_flag=2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from data_pipeline.loading.augment import model_view
from exemplars.features import extract_features
from trainer.methods.models.heads import CosineHead
from trainer.methods.models.net import IncrementalNet
from trainer.methods.schedule import step_lr
from trainer.methods.strategies import freezing
from trainer.methods.strategies.base import Batch, Strategy, register
from trainer.methods.strategies.stages import (
    BalancedFinetune,
    Exemplars,
    Stage,
    StageSpec,
    Train,
)


@dataclass
class LUCIRSettings:
    lambda_base: float = 5.0             # less-forget weight; LUCIR: 5 on CIFAR-100, 10 on ImageNet
    adaptive_lambda: bool = True         # lambda = lambda_base * sqrt(|old classes| / |new classes|)
    margin: float = 0.5                  # m of the margin-ranking loss
    hard_negatives: int = 2              # K: top-K new-class scores ranked against the ground truth
    margin_weight: float = 1.0
    imprint: bool = True                 # new-class weights from normalised class-mean features
    cbf_epochs: int = 20                 # class-balanced fine-tuning (classifier only) on the exemplars
    cbf_lr: float = 0.01
    cbf_lr_milestones: list[int] = field(default_factory=lambda: [10])

    def __post_init__(self):
        if self.hard_negatives < 1:
            raise ValueError(f"hard_negatives must be >= 1, got {self.hard_negatives}")


def margin_ranking_loss(cos: torch.Tensor, labels: torch.Tensor, num_old: int, k: int, margin: float) -> torch.Tensor:
    """LUCIR's inter-class separation on cosine scores `cos` (B, seen): samples of old classes, their
    ground-truth score against the K highest new-class scores, hinge with `margin`; 0 when none apply."""
    hard = labels < num_old
    n_new = cos.shape[1] - num_old
    if num_old == 0 or n_new <= 0 or not bool(hard.any()):
        return cos.sum() * 0.0
    c = cos[hard]
    gt = c.gather(1, labels[hard][:, None])                       # (h, 1)
    top = c[:, num_old:].topk(min(k, n_new), dim=1).values         # (h, K)
    return F.relu(margin - gt + top).mean()


def less_forget_loss(features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos(f, f*)): torch's CosineEmbeddingLoss with all targets 1, as LUCIR uses."""
    return (1.0 - F.cosine_similarity(features, teacher_features, dim=1)).mean()


class LUCIRTrain(Train):
    """Training with imprinted new-class weights and the old classes' weights fixed."""

    def __init__(self, lucir: LUCIR):
        self.lucir = lucir
        self._saved = None

    def prepare(self, ctx, data) -> None:
        if ctx.phase > 0 and self.lucir.settings.imprint and data.real_images is not None:
            self.lucir.imprint(ctx.model, data.real_images, data.real_labels, ctx.new_labels, ctx.device)

    def before(self, ctx) -> None:
        if ctx.phase > 0:
            self._saved = freezing.freeze(ctx.model, list(ctx.model.head.weights)[:-1])

    def after(self, ctx) -> None:
        freezing.restore(ctx.model, self._saved)
        self._saved = None


class LUCIRFinetune(BalancedFinetune):
    """Class-balanced fine-tuning: the classifier only, LUCIR's own schedule (strategy.lucir.cbf_*)."""

    def __init__(self, lucir: LUCIR):
        self.lucir = lucir
        self._saved = None

    def spec(self, ctx) -> StageSpec:
        s, gamma = self.lucir.settings, self.lucir.setup.lr_gamma
        ms = list(s.cbf_lr_milestones)
        return StageSpec(s.cbf_epochs, s.cbf_lr, lambda e: step_lr(s.cbf_lr, e, ms, gamma))

    def before(self, ctx) -> None:
        self._saved = freezing.train_only(ctx.model, list(ctx.model.head.parameters()))

    def after(self, ctx) -> None:
        freezing.restore(ctx.model, self._saved)
        self._saved = None

    def loss(self, strategy, model, batch):
        model.backbone.eval()                # LUCIR fixes BatchNorm in class-balanced fine-tuning
        return strategy.loss(model, batch, self)


@register
class LUCIR(Strategy):
    name = "lucir"
    Settings = LUCIRSettings

    def __init__(self, settings=None, setup=None):
        super().__init__(settings, setup)
        self.lam = self.settings.lambda_base

    def build_model(self):
        net = IncrementalNet(self.setup.arch, self.setup.preset, last_relu=False)
        net.head = CosineHead(net.backbone.out_dim)
        return net

    def before_phase(self, ctx) -> None:
        super().before_phase(ctx)
        s = self.settings
        n_new = len(ctx.new_labels)
        self.lam = s.lambda_base * (math.sqrt(self.num_old / n_new) if s.adaptive_lambda and n_new else 1.0)

    def stages(self, ctx) -> list[Stage]:
        stages = [LUCIRTrain(self), Exemplars()]
        return stages + [LUCIRFinetune(self)] if self.balanced_finetune and ctx.phase > 0 else stages

    @torch.no_grad()
    def imprint(self, model, images: torch.Tensor, labels: torch.Tensor, new_labels: list[int], device) -> None:
        """Each new class's weight: the normalised mean feature of its images, at the old weights' mean norm."""
        head = model.head
        old_w = head.weight[: self.num_old]
        scale = old_w.norm(dim=1).mean() if len(old_w) else torch.tensor(1.0)
        new_w = head.weights[-1]
        for j, label in enumerate(new_labels):
            x = model_view(images[labels == label], self.setup.image_size)
            f = extract_features(model, x, device, self.setup.feature_batch_size)
            if len(f):
                new_w[j] = F.normalize(f.mean(0), dim=0).to(new_w) * scale.to(new_w)

    def loss(self, model, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        f = model.features(batch.x)
        cos = model.head.cosine(f)[:, : self.num_seen]
        ce = F.cross_entropy(model.head.sigma * cos, batch.y)
        if self.teacher is None or self.num_old == 0:
            return {"loss": ce, "ce": ce}
        s = self.settings
        with torch.no_grad():
            f_old = self.teacher.features(batch.x)
        lf = less_forget_loss(f, f_old)
        mr = margin_ranking_loss(cos, batch.y, self.num_old, s.hard_negatives, s.margin)
        loss = self.lam * lf + ce + s.margin_weight * mr
        return {"loss": loss, "ce": ce, "less_forget": lf, "margin": mr}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "lam": self.lam}

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        self.lam = sd.get("lam", self.lam)
