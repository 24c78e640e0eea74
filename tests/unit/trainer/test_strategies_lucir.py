"""LUCIR: margin-ranking loss (zero once the margin is met), adaptive less-forget weight, imprinted
weights, which parameters each stage trains, and the cosine head."""
import math

import pytest
import torch
import torch.nn.functional as F
from strategy_kit import batch, perturb, stage_of, start

from trainer.methods.models.heads import CosineHead
from trainer.methods.strategies.lucir import less_forget_loss, margin_ranking_loss
from trainer.methods.strategies.stages import StageData, Train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_margin_loss_is_zero_when_the_margin_is_met():
    num_old, m = 3, 0.5
    labels = torch.tensor([0, 1, 2, 3, 4])                    # three old-class samples, two new
    cos = torch.full((5, 6), -0.2)
    cos[torch.arange(5), labels] = 0.95
    cos[:3, 3:] = torch.tensor([0.4, 0.3, 0.35])              # gt 0.95 - best new 0.4 = 0.55 >= m
    assert margin_ranking_loss(cos, labels, num_old, 2, m).item() == 0.0
    cos[1, 4] = 0.5                                            # one hard negative inside the margin
    loss = margin_ranking_loss(cos, labels, num_old, 2, m)
    # hinge over 3 old samples x K=2 hard negatives: only (sample 1, 0.5) violates, by 0.05
    assert loss.item() == pytest.approx(0.05 / 6)
    # equals torch's MarginRankingLoss on gt vs top-K new scores, as LUCIR's code computes it
    c = torch.rand(7, 6) * 2 - 1
    y = torch.tensor([0, 2, 1, 4, 0, 5, 2])
    hard = y < num_old
    gt = c[hard].gather(1, y[hard][:, None]).repeat(1, 2)
    top = c[hard, num_old:].topk(2, 1).values
    ref = torch.nn.MarginRankingLoss(margin=m)(gt.reshape(-1), top.reshape(-1), torch.ones(gt.numel()))
    torch.testing.assert_close(margin_ranking_loss(c, y, num_old, 2, m), ref)
    assert margin_ranking_loss(c, torch.tensor([3, 4, 5, 3, 4, 5, 3]), num_old, 2, m).item() == 0.0


def test_less_forget_is_cosine_embedding_loss():
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    ref = torch.nn.CosineEmbeddingLoss()(a, b, torch.ones(6))
    torch.testing.assert_close(less_forget_loss(a, b), ref)
    assert less_forget_loss(a, a.clone()).abs().item() < 1e-6


def test_cosine_head_scales_unit_cosines():
    head = CosineHead(8, 3)
    head.grow(2)
    f = torch.randn(4, 8)
    cos = head.cosine(f)
    assert cos.shape == (4, 5) and cos.abs().max() <= 1 + 1e-6
    with torch.no_grad():
        head.sigma.fill_(7.0)
    torch.testing.assert_close(head(f), 7.0 * cos)


def test_lucir_phase_set_up_imprint_lambda_and_frozen_parts():
    strategy, model, ctx = start("lucir", 1)
    assert not model.backbone.layers[-1].last_relu                 # features before the last ReLU
    assert strategy.lam == pytest.approx(5.0 * math.sqrt(4 / 2))  # λ_base·sqrt(|old|/|new|)
    g = torch.Generator().manual_seed(0)
    y = torch.tensor(ctx.new_labels).repeat_interleave(5)
    x = torch.randint(0, 256, (len(y), 3, 16, 16), generator=g, dtype=torch.uint8)
    old_norm = model.head.weights[0].detach().norm(dim=1).mean()
    train, finetune = stage_of(strategy, ctx, "train"), stage_of(strategy, ctx, "balanced_finetune")
    train.prepare(ctx, StageData(x, y, None, None))
    model.eval()
    with torch.no_grad():
        for j, label in enumerate(ctx.new_labels):
            f = F.normalize(model.features(x[y == label].float() / 255), dim=1).mean(0)
            w = model.head.weights[1][j]
            torch.testing.assert_close(F.normalize(w, dim=0), F.normalize(f, dim=0), atol=1e-5, rtol=1e-4)
            assert w.norm().item() == pytest.approx(old_norm.item(), rel=1e-5)
    train.before(ctx)
    assert not model.head.weights[0].requires_grad and model.head.weights[1].requires_grad
    assert model.head.sigma.requires_grad and model.backbone.conv1.weight.requires_grad
    train.after(ctx)
    finetune.before(ctx)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weights.0", "head.weights.1", "head.sigma"}
    finetune.after(ctx)
    assert all(p.requires_grad for p in model.parameters())
    spec = finetune.spec(ctx)
    assert (spec.epochs, spec.lr, spec.lr_at(10)) == (20, 0.01, pytest.approx(0.001))


def test_lucir_loss_terms():
    strategy, model, ctx = start("lucir", 1)
    b = batch(ctx.seen_labels, n=12)
    model.eval()
    out = strategy.loss(model, b, Train())
    assert out["less_forget"].abs().item() < 1e-5                   # student == teacher at the start
    perturb(model.backbone, scale=0.2, seed=3)
    out = strategy.loss(model, b, Train())
    torch.testing.assert_close(out["loss"], strategy.lam * out["less_forget"] + out["ce"] + out["margin"])
    assert out["less_forget"].item() > 0
