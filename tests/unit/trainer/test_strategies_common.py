"""Every registered strategy on tiny data: finite losses and gradients in every stage of phases 0
and 1, and the registry knows every method of the design card."""
import pytest
import torch
from strategy_kit import batch, fill_memory, perturb, start

from trainer.methods.strategies.base import REGISTRY
from trainer.methods.strategies.stages import StageData

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_has_every_method():
    assert {"lwf", "icarl", "bic", "lucir", "lwm", "finetune", "joint"} <= set(REGISTRY.known())


def _stage_batch(strategy, ctx, stage, b):
    """The batch after the stage's `data` (BiC's bias stage: its held-out split)."""
    ex_x, ex_y = ctx.memory.tensors(ctx.old_labels)
    real = (b.x * 255).to(torch.uint8)
    if not stage.rehearses:
        data = StageData(None, None, *ctx.memory.tensors(ctx.seen_labels))
    else:
        data = StageData(real, b.y, ex_x, ex_y)
    data = stage.data(ctx, data)
    xs = [t.float() / 255 for t in (data.real_images,) if t is not None and len(t)]
    xs += [t.float() for t in (data.ex_images,) if t is not None and len(t)]
    ys = [t for t in (data.real_labels, data.ex_labels) if t is not None and len(t)]
    return (torch.cat(xs), torch.cat(ys)) if xs else (None, None)


@pytest.mark.parametrize("name", ["lwf", "icarl", "bic", "lucir", "lwm", "finetune", "joint"])
@pytest.mark.parametrize("phase", [0, 1])
def test_finite_losses_in_every_stage(name, phase):
    strategy, model, ctx = start(name, phase)
    if phase:
        perturb(model, seed=11)               # the student has moved away from the teacher
    labels = ctx.seen_labels
    b = batch(list(ctx.new_labels) * 3 + list(ctx.old_labels), n=16)
    # exemplars of old classes so that the rehearsal stages have data
    fill_memory(ctx.memory, ctx.seen_labels, per_class=4)
    seen_stages = []
    for stage in strategy.stages(ctx):
        if stage.kind != "model":
            continue
        x, y = _stage_batch(strategy, ctx, stage, b)
        if x is None:
            continue
        stage.before(ctx)
        model.train()
        out = stage.loss(strategy, model, type(b)(x, y))
        assert "loss" in out and out["loss"].dim() == 0
        for k, v in out.items():
            assert torch.isfinite(v), (name, stage, k, v)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(out["loss"], params, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), (name, stage)
        assert all(g is None or torch.isfinite(g).all() for g in grads)
        stage.after(ctx)
        seen_stages.append(stage.name)
    assert "train" in seen_stages
    strategy.after_phase(ctx)
    scores = strategy.predict(model.eval(), b.x)
    assert scores.shape == (len(b.x), len(labels)) and torch.isfinite(scores).all()
    if phase and name == "bic":
        assert "bias" in seen_stages
