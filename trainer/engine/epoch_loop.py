"""The epoch loop of one stage: batches -> loss -> engine step, with progress lines and events.

The loop knows nothing of methods: `loss_fn(model, x, y)` returns the stage's loss dict (it must hold
"loss"); events go to any object with `write(**fields)` (the run's events.jsonl).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from core import faults, stop
from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.engine.step_timer import StepTimer, peak_memory_mb

log = logging.getLogger(__name__)
LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], dict]


class Events(Protocol):
    def write(self, **event) -> None: ...


@dataclass
class StageRun:
    """Which epochs of which stage to train: `lr_at(epoch)` gives the learning rate; `on_epoch_end(epoch)`
    runs after each epoch (engine checkpoints, fault points) and returns what it did, for the epoch-end event.
    `start_step`: steps of `start_epoch` already trained (a resume from a step boundary: they are replayed without
    training, so the epoch's batches come out as before). `on_stop(epoch, steps)`: saves the stage after `steps`
    steps of `epoch` when all ranks agree to stop (core/stop.py); then StopRequested is raised."""
    stage: str
    phase: int
    epochs: int
    lr_at: Callable[[int], float]
    start_epoch: int = 0
    log_every: int = 50
    on_epoch_end: Callable[[int], dict | None] | None = None
    start_step: int = 0
    on_stop: Callable[[int, int], None] | None = None

    def stop_agreed(self, step: int, steps: int) -> bool:
        """At a step boundary (`step` steps of `steps` done): whether every rank stops here."""
        if self.on_stop is None or not stop.armed():
            return False
        if step < steps and step % stop.check_every():
            return False
        return distributed.any_true(stop.requested())


def micro_batches(x: torch.Tensor, y: torch.Tensor, micro: int, accum: int):
    """One rank's batch as the engine's `accum` micro-steps: (x, y, weight) chunks of `micro` images, and
    a leading None for each micro-step a short batch (an epoch's tail) has no images for (the engine pads
    it: Engine.pad_micro_step). The weight
    makes the accumulated gradient the whole batch's mean: the engine divides every micro-step's loss
    by `accum`, so a chunk of n_m of the batch's n images counts n_m * accum / n (1.0 when it is a
    full micro-batch of a full batch). BatchNorm sees micro-batch statistics, as on more GPUs."""
    if accum <= 1:
        yield x, y, 1.0
        return
    k = min(accum, math.ceil(len(y) / micro))       # more than micro * accum: a tail joined the batch
    chunks = list(zip(x.tensor_split(k), y.tensor_split(k)))
    for _ in range(accum - len(chunks)):      # before the real ones: the last micro-step has a backward
        yield None
    for xm, ym in chunks:
        yield xm, ym, len(ym) * accum / len(y)


def _check_finite(finite: torch.Tensor, run: StageRun, epoch: int, step: int) -> None:
    if not bool(finite):                       # the one host sync, at log points and epoch ends only
        raise FloatingPointError(f"phase {run.phase} {run.stage} epoch {epoch}: the loss became non-finite by "
                                 f"step {step + 1} (lower the learning rate?)")


def _train_epoch(engine: Engine, loss_fn: LossFn, batches, run: StageRun, epoch: int, timer: StepTimer) -> dict:
    """One epoch; returns the loss sums, images, seconds and data wait (loss sums stay on the device:
    reading them every step would stall a GPU twice per step; they are read at log points only)."""
    model, world = engine.module, engine.world
    sums: dict[str, torch.Tensor] = {}
    finite = torch.ones((), dtype=torch.bool, device=engine.device)
    n_img = step = 0
    wait = 0.0
    t0 = t_data = time.perf_counter()
    timer.start_epoch()
    skip = run.start_step if epoch == run.start_epoch else 0
    for step, (x, y) in enumerate(batches.epoch(epoch)):
        if step < skip:                        # trained before the stop this run resumes from
            t0 = t_data = time.perf_counter()
            timer.start_epoch()
            continue
        x, y = x.to(engine.device, non_blocking=True), y.to(engine.device, non_blocking=True)
        wait += time.perf_counter() - t_data
        timer.mark("data")
        for chunk in micro_batches(x, y, engine.micro, engine.accum):
            if chunk is None:
                engine.pad_micro_step(lambda: loss_fn(model, x[:1], y[:1])["loss"])
                continue
            xm, ym, weight = chunk
            with engine.autocast():
                losses = loss_fn(model, xm, ym)
            timer.mark("forward")
            finite &= torch.isfinite(losses["loss"].detach())
            engine.step(losses["loss"] * weight if weight != 1.0 else losses["loss"], mark=timer.mark)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * len(ym)
        n_img += len(y)
        if run.log_every and (step + 1) % run.log_every == 0:
            _check_finite(finite, run, epoch, step)
            log.info("phase %d %s epoch %d/%d step %d/%d loss %.4f %.0f img/s", run.phase, run.stage, epoch + 1,
                     run.epochs, step + 1, batches.steps_per_epoch, float(sums["loss"]) / n_img,
                     n_img * world / (time.perf_counter() - t0))
        t_data = time.perf_counter()
        timer.mark("other")
        faults.maybe_fail(f"{run.stage}_step", run.phase, epoch * batches.steps_per_epoch + step + 1)
        if step + 1 < batches.steps_per_epoch and run.stop_agreed(step + 1, batches.steps_per_epoch):
            run.on_stop(epoch, step + 1)
            raise stop.StopRequested(f"phase {run.phase} {run.stage}: stopped after step {step + 1} of epoch {epoch + 1}")
    steps_end = time.perf_counter()
    _check_finite(finite, run, epoch, step)
    distributed.average_buffers(model)
    return {"sums": sums, "images": n_img, "seconds": time.perf_counter() - t0, "wait": wait, "steps_end": steps_end}


def _epoch_record(engine: Engine, run: StageRun, epoch: int, lr: float, got: dict, timer: StepTimer,
                  eta: float) -> dict:
    n_img, dt, wait = got["images"], got["seconds"], got["wait"]
    means = {k: float(v) / max(1, n_img) for k, v in got["sums"].items()}
    img_s = n_img * engine.world / dt if dt > 0 else math.nan
    log.info("phase %d %-17s epoch %3d/%d  loss %.4f  lr %.4g  %6.0f img/s  data-wait %4.1f%%  eta %4.0fs",
             run.phase, run.stage, epoch + 1, run.epochs, means.get("loss", math.nan), lr, img_s,
             100 * wait / dt if dt else 0, eta)
    return {"phase": run.phase, "stage": run.stage, "epoch": epoch, "lr": lr, "img_s": round(img_s, 1),
            "images": n_img * engine.world, "data_wait_share": round(wait / dt, 4) if dt else 0.0,
            "seconds": round(dt, 3), "peak_mem_mb": round(peak_memory_mb(engine.device), 1),
            **timer.end_epoch(n_img),      # all ranks: global and per-rank img/s, split, memory
            **{f"loss_{k}" if k != "loss" else "loss": round(v, 6) for k, v in means.items()}}


def run_epochs(engine: Engine, loss_fn: LossFn, batches, run: StageRun, events: Events) -> dict:
    """Train epochs `run.start_epoch .. run.epochs - 1`; returns the stage's figures."""
    seen_images = 0
    stage_start = time.perf_counter()
    last = {}
    timer = StepTimer(engine.device, engine.world)        # data/forward/backward/optimizer split, per rank
    for epoch in range(run.start_epoch, run.epochs):
        lr = run.lr_at(epoch)
        engine.set_lr(lr)
        engine.module.train()
        got = _train_epoch(engine, loss_fn, batches, run, epoch, timer)
        seen_images += got["images"]
        elapsed = time.perf_counter() - stage_start
        eta = elapsed / (epoch + 1 - run.start_epoch) * (run.epochs - epoch - 1)
        last = _epoch_record(engine, run, epoch, lr, got, timer, eta)
        events.write(event="epoch", **last)
        done = run.on_epoch_end(epoch) if run.on_epoch_end is not None else None
        # the epoch end's cost: the buffers' average, the figures gathered from every rank, a checkpoint
        events.write(event="epoch_end", phase=run.phase, stage=run.stage, epoch=epoch,
                     seconds=round(time.perf_counter() - got["steps_end"], 4), **(done or {}))
        if epoch + 1 < run.epochs and run.stop_agreed(batches.steps_per_epoch, batches.steps_per_epoch):
            run.on_stop(epoch, batches.steps_per_epoch)
            raise stop.StopRequested(f"phase {run.phase} {run.stage}: stopped after epoch {epoch + 1}")
    total = time.perf_counter() - stage_start
    events.write(event="stage", phase=run.phase, stage=run.stage, seconds=round(total, 3),
                 engine_setup_s=round(getattr(engine, "setup_s", 0.0), 3), loader=getattr(batches, "loader", None))
    return {"seconds": total, "img_s": seen_images * engine.world / total if total > 0 else math.nan,
            "final_loss": last.get("loss", math.nan), "profile": timer.summary()}
