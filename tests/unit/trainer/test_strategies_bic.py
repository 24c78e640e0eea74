"""BiC: the bias stage trains exactly the newest layer's two parameters (through the real engine), on a
class-balanced split held out of the training stage."""
import pytest
import torch
from strategy_kit import PLAN, batch, fill_memory, perturb, stage_of, start

from core.errors import UserError
from exemplars.memory import ExemplarMemory
from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.methods.strategies.base import Batch
from trainer.methods.strategies.stages import StageData, Train

pytestmark = pytest.mark.usefixtures("one_thread")


def _phase_data(ctx, per_class=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(ctx.new_labels).repeat_interleave(per_class)
    x = torch.randint(0, 256, (len(y), 3, 16, 16), generator=g, dtype=torch.uint8)
    ex_x, ex_y = ctx.memory.tensors(ctx.old_labels)
    return StageData(x, y, ex_x, ex_y)


def test_holdout_is_class_balanced_and_disjoint():
    strategy, model, ctx = start("bic", 1, memory=fill_memory(ExemplarMemory(), PLAN.new_labels(0), per_class=10))
    data = _phase_data(ctx)
    train = stage_of(strategy, ctx, "train").data(ctx, data)
    val = stage_of(strategy, ctx, "bias").data(ctx, data)
    k = 1                                                   # round(0.1 * 10)
    for c in ctx.old_labels:
        assert int((val.ex_labels == c).sum()) == k and int((train.ex_labels == c).sum()) == 10 - k
    for c in ctx.new_labels:
        assert int((val.real_labels == c).sum()) == k and int((train.real_labels == c).sum()) == 10 - k
    assert len(train) + len(val) == len(data)
    seen = {tuple(t.flatten()[:16].tolist()) for t in train.real_images}
    assert not any(tuple(t.flatten()[:16].tolist()) in seen for t in val.real_images)
    again = stage_of(strategy, ctx, "bias").data(ctx, data)          # deterministic (a resumed phase gets the same)
    assert torch.equal(again.real_labels, val.real_labels) and torch.equal(again.ex_images, val.ex_images)


def test_bias_stage_trains_only_its_two_parameters():
    strategy, model, ctx = start("bic", 1, memory=fill_memory(ExemplarMemory(), PLAN.new_labels(0), per_class=10))
    perturb(model, seed=3)
    bias = stage_of(strategy, ctx, "bias")
    bias.before(ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.alphas.1", "head.betas.1"]
    assert all(p.numel() == 1 for p in model.parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = bias.spec(ctx)
    assert spec.weight_decay == 0.0 and spec.epochs == strategy.settings.bias_epochs
    engine = Engine(model, distributed.init(), 8, 0.5, 0.9, spec.weight_decay)
    model.train()
    for step in range(3):
        b = batch(ctx.seen_labels, n=8, seed=step)
        engine.step(bias.loss(strategy, engine.module, Batch(b.x, b.y))["loss"])
    after = engine.module.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["head.alphas.1", "head.betas.1"]       # BatchNorm statistics included: unchanged
    bias.after(ctx)
    assert not model.head.alphas[1].requires_grad and model.backbone.conv1.weight.requires_grad
    # each phase's logits go through that phase's layer: alpha_j * o + beta_j
    model.eval()
    with torch.no_grad():
        f = model.features(b.x)
        raw = model.head.inner(f)
        out = model.head(f)
    a, c = model.head.alphas[1].item(), model.head.betas[1].item()
    torch.testing.assert_close(out[:, 4:6], raw[:, 4:6] * a + c)
    torch.testing.assert_close(out[:, :4], raw[:, :4] * model.head.alphas[0] + model.head.betas[0])


def test_train_stage_loss_weights_distillation_by_old_share():
    strategy, model, ctx = start("bic", 1)
    perturb(model, scale=0.2, seed=7)
    model.eval()
    out = strategy.loss(model, batch(ctx.seen_labels, n=8), Train())
    lam = 4 / 6
    torch.testing.assert_close(out["loss"], lam * out["kd"] + (1 - lam) * out["ce"])
    assert not any(p.requires_grad for p in list(model.head.alphas) + list(model.head.betas))


def test_bias_stage_follows_the_authors_schedule_and_penalises_beta():
    """The bias stage: the authors' code's schedule (rate 0.1 held constant, 200 epochs) and penalty
    beta_l2·β²/2 on the newest layer's β (a stored config without beta_l2 ran without it)."""
    from trainer.config import stored_defaults

    strategy, model, ctx = start("bic", 1, memory=fill_memory(ExemplarMemory(), PLAN.new_labels(0), per_class=10))
    spec = stage_of(strategy, ctx, "bias").spec(ctx)
    assert (spec.epochs, spec.lr, spec.lr_at(0), spec.lr_at(199)) == (200, 0.1, 0.1, 0.1)
    bias = stage_of(strategy, ctx, "bias")
    b = batch(ctx.seen_labels, n=8, seed=1)
    at = {}
    for beta in (0.0, 2.0):
        with torch.no_grad():
            model.head.betas[1].fill_(beta)
        out = bias.loss(strategy, model, Batch(b.x, b.y))
        at[beta] = out["loss"] - out["ce"]
    assert at[0.0].item() == 0.0 and at[2.0].item() == pytest.approx(strategy.settings.beta_l2 * 2.0 ** 2 / 2)
    assert stored_defaults()["strategy"]["bic"]["beta_l2"] == 0.0


def _uint8_rows(t: torch.Tensor) -> set:
    return {bytes(x.flatten().tolist()) for x in t}


def test_arrival_validation_is_set_apart_when_a_class_arrives_and_never_trained_on():
    """FACIL's form: each class's set-apart images are drawn in the phase it arrives (phase 0 too), left out of
    that phase's training, kept beside the memory, and are the old classes' part of every later bias stage;
    the training stage rehearses every stored exemplar. A resumed strategy (its state reloaded) gives the same."""
    arrival = ("strategy.bic.validation=arrival", "strategy.bic.arrival_per_class=2")
    strategy, model, ctx0 = start("bic", 0, *arrival, memory=ExemplarMemory())
    data0 = _phase_data(ctx0)
    train0 = stage_of(strategy, ctx0, "train").data(ctx0, data0)
    assert "bias" not in {s.name for s in strategy.stages(ctx0)}
    for c in ctx0.new_labels:
        assert int((train0.real_labels == c).sum()) == 10 - 2
    held0 = _uint8_rows(data0.real_images) - _uint8_rows(train0.real_images)
    assert len(held0) == 2 * len(ctx0.new_labels)

    fill_memory(ctx0.memory, ctx0.new_labels, per_class=10)
    strategy.after_phase(ctx0)
    ctx1 = type(ctx0)(1, ctx0.plan, model, ctx0.device, ctx0.memory)
    strategy.before_phase(ctx1)
    data1 = _phase_data(ctx1, seed=1)
    train1 = stage_of(strategy, ctx1, "train").data(ctx1, data1)
    assert torch.equal(train1.ex_labels, data1.ex_labels)           # every stored exemplar trains
    val = stage_of(strategy, ctx1, "bias").data(ctx1, data1)
    assert val.ex_labels is None and val.real_images.dtype == torch.uint8
    for c in ctx1.seen_labels:
        assert int((val.real_labels == c).sum()) == 2
    old = val.real_images[torch.isin(val.real_labels, torch.tensor(ctx1.old_labels))]
    assert _uint8_rows(old) == held0                                  # phase 0's set-apart images
    new = val.real_images[torch.isin(val.real_labels, torch.tensor(ctx1.new_labels))]
    assert not _uint8_rows(new) & _uint8_rows(train1.real_images)     # never in this phase's training

    sd = strategy.state_dict()                                        # a resume: a fresh strategy, its state reloaded
    again, _, ctx_again = start("bic", 1, *arrival, memory=ctx1.memory)
    again.load_state_dict(sd)
    val_again = stage_of(again, ctx_again, "bias").data(ctx_again, data1)
    assert torch.equal(val_again.real_images, val.real_images) and torch.equal(val_again.real_labels, val.real_labels)


def test_arrival_validation_names_what_it_lacks():
    with pytest.raises(UserError, match="strategy.bic': validation must be one of memory, arrival, got 'held'"):
        start("bic", 0, "strategy.bic.validation=held")
    strategy, _, ctx = start("bic", 0, "strategy.bic.validation=arrival", "strategy.bic.arrival_per_class=10",
                             memory=ExemplarMemory())
    with pytest.raises(UserError, match="arrival_per_class=10 leaves class .* no training image"):
        stage_of(strategy, ctx, "train").data(ctx, _phase_data(ctx))
    lwf_like, _, ctx1 = start("bic", 1, "strategy.bic.validation=arrival", memory=ExemplarMemory())
    with pytest.raises(RuntimeError, match="holds no set-apart images of classes"):
        stage_of(lwf_like, ctx1, "bias").data(ctx1, _phase_data(ctx1))
