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

import torch
import torch.nn.functional as F

from data_pipeline.loading.augment import model_view
from exemplars.features import extract_features
from trainer.methods.models.heads import CosineHead
from trainer.methods.models.net import IncrementalNet
from trainer.methods.schedule import step_lr
from trainer.methods.strategies import freezing
from trainer.methods.strategies.base import Batch, StageSpec, Strategy
from trainer.methods.strategies.registry import register


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


@register
class LUCIR(Strategy):
    name = "lucir"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.lam = cfg.strategy.lucir.lambda_base
        self._saved = None
        self._imprinted_phase = -1

    def build_model(self, cfg):
        net = IncrementalNet(cfg.model.arch, cfg.data.preset, last_relu=False)
        net.head = CosineHead(net.backbone.out_dim)
        return net

    def before_phase(self, ctx) -> None:
        super().before_phase(ctx)
        s = self.cfg.strategy.lucir
        n_new = len(ctx.new_labels)
        self.lam = s.lambda_base * (math.sqrt(self.num_old / n_new) if s.adaptive_lambda and n_new else 1.0)

    # -- imprinting: needs the phase's data, which the driver hands to stage_data ----------------------
    @torch.no_grad()
    def imprint(self, model, images: torch.Tensor, labels: torch.Tensor, new_labels: list[int], device) -> None:
        head = model.head
        old_w = head.weight[: self.num_old]
        scale = old_w.norm(dim=1).mean() if len(old_w) else torch.tensor(1.0)
        new_w = head.weights[-1]
        for j, label in enumerate(new_labels):
            x = model_view(images[labels == label], self.cfg.data.image_size)
            f = extract_features(model, x, device, self.cfg.eval.batch_size)
            if len(f):
                new_w[j] = F.normalize(f.mean(0), dim=0).to(new_w) * scale.to(new_w)

    def stage_data(self, stage, ctx, data):
        s = self.cfg.strategy.lucir
        if stage == "train" and ctx.phase > 0 and s.imprint and self._imprinted_phase != ctx.phase \
                and data.real_images is not None:
            self.imprint(ctx.model, data.real_images, data.real_labels, ctx.new_labels, ctx.device)
            self._imprinted_phase = ctx.phase
        return data

    def stage_spec(self, stage, ctx):
        if stage != "balanced_finetune":
            return None
        s = self.cfg.strategy.lucir
        ms = list(s.cbf_lr_milestones)
        return StageSpec(s.cbf_epochs, s.cbf_lr, lambda e: step_lr(s.cbf_lr, e, ms, self.cfg.train.lr_gamma))

    def before_stage(self, stage, ctx) -> None:
        head = ctx.model.head
        if stage == "train" and ctx.phase > 0:
            self._saved = freezing.freeze(ctx.model, list(head.weights)[:-1])      # old classes' weights fixed
        elif stage == "balanced_finetune":
            self._saved = freezing.train_only(ctx.model, list(head.parameters()))  # classifier only

    def after_stage(self, stage, ctx) -> None:
        freezing.restore(ctx.model, self._saved)
        self._saved = None

    def loss(self, model, batch: Batch, stage: str) -> dict[str, torch.Tensor]:
        if stage == "balanced_finetune":
            model.backbone.eval()                # LUCIR fixes BatchNorm in class-balanced fine-tuning
        f = model.features(batch.x)
        cos = model.head.cosine(f)[:, : self.num_seen]
        ce = F.cross_entropy(model.head.sigma * cos, batch.y)
        if self.teacher is None or self.num_old == 0:
            return {"loss": ce, "ce": ce}
        s = self.cfg.strategy.lucir
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
