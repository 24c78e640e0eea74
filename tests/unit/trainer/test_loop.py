"""trainer/engine/epoch_loop.py: device-resident loss bookkeeping and the non-finite loss stop."""
import pytest
from strategy_kit import PLAN, batch, start

from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.engine.epoch_loop import StageRun, run_epochs
from trainer.methods.strategies.base import Batch
from trainer.methods.strategies.stages import Train
from trainer.run.events import EventLog


class _Batches:
    steps_per_epoch = 6

    def epoch(self, e):
        for s in range(self.steps_per_epoch):
            b = batch(PLAN.new_labels(0), n=8, seed=10 * e + s)
            yield b.x, b.y


def _run(strategy, model, log_every=0):
    engine = Engine(model, distributed.init(), 8, 0.05, 0.9, 5e-4)
    return run_epochs(engine, lambda m, x, y: strategy.loss(m, Batch(x, y), Train()), _Batches(),
                      StageRun("train", 0, 2, lambda e: 0.05, log_every=log_every), EventLog(None))


def test_stage_reports_the_mean_loss_of_its_last_epoch(one_thread):
    strategy, model, _ = start("lwf", 0)
    seen, real = [], strategy.loss

    def recorded(m, b, stage):
        out = real(m, b, stage)
        seen.append(out["loss"].item())
        return out

    strategy.loss = recorded
    figures = _run(strategy, model)
    assert figures["final_loss"] == pytest.approx(sum(seen[6:]) / 6, rel=1e-5)   # epoch 2's mean (equal batches)


@pytest.mark.parametrize("log_every", [0, 2])
def test_a_non_finite_loss_stops_the_stage_naming_where(one_thread, log_every):
    strategy, model, _ = start("lwf", 0)
    real, calls = strategy.loss, []

    def diverging(m, b, stage):          # stands in for a diverging run: NaN from the third step on
        out = real(m, b, stage)
        calls.append(1)
        if len(calls) >= 3:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    strategy.loss = diverging
    with pytest.raises(FloatingPointError, match=r"phase 0 train epoch 0: the loss became non-finite by step "
                                                 rf"{6 if log_every == 0 else 4}"):
        _run(strategy, model, log_every)
