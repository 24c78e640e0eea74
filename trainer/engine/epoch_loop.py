"""The epoch loop of one stage: batches -> strategy loss -> engine step, with progress and events."""
from __future__ import annotations

import logging
import math
import time

import torch

from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.engine.step_timer import StepTimer
from trainer.methods.strategies.base import Batch, Strategy
from trainer.run.events import EventLog, peak_memory_mb

log = logging.getLogger(__name__)


def _check_finite(finite: torch.Tensor, phase: int, stage: str, epoch: int, step: int) -> None:
    if not bool(finite):                       # the one host sync, at log points and epoch ends only
        raise FloatingPointError(f"phase {phase} {stage} epoch {epoch}: the loss became non-finite by step "
                                 f"{step + 1} (lower the learning rate?)")


def run_stage(engine: Engine, strategy: Strategy, batches, epochs: int, lr_at, stage: str, phase: int,
              events: EventLog, world: int, log_every: int = 50, start_epoch: int = 0, on_epoch_end=None) -> dict:
    """Train epochs `start_epoch..epochs-1`; `lr_at(epoch)` gives the learning rate; `on_epoch_end(epoch)`
    runs after each epoch (engine checkpoints). Returns the stage's figures."""
    model = engine.module
    steps = batches.steps_per_epoch
    seen_images = 0
    stage_start = time.perf_counter()
    last = {}
    timer = StepTimer(engine.device, world)        # data/forward/backward/optimizer split, per rank
    for epoch in range(start_epoch, epochs):
        lr = lr_at(epoch)
        engine.set_lr(lr)
        model.train()
        # Loss sums and the finiteness flag stay on the device: reading them back every step would
        # stall a GPU twice per step; they are read at log points and at the end of the epoch.
        sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=engine.device)
        n_img = step = 0
        wait = 0.0
        t0 = t_data = time.perf_counter()
        timer.start_epoch()
        for step, (x, y) in enumerate(batches.epoch(epoch)):
            x, y = x.to(engine.device, non_blocking=True), y.to(engine.device, non_blocking=True)
            wait += time.perf_counter() - t_data
            timer.mark("data")
            with engine.autocast():
                losses = strategy.loss(model, Batch(x, y), stage)
            timer.mark("forward")
            loss = losses["loss"]
            finite &= torch.isfinite(loss.detach())
            engine.step(loss, mark=timer.mark)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * len(y)
            n_img += len(y)
            if log_every and (step + 1) % log_every == 0:
                _check_finite(finite, phase, stage, epoch, step)
                rate = n_img * world / (time.perf_counter() - t0)
                log.info("phase %d %s epoch %d/%d step %d/%d loss %.4f %.0f img/s", phase, stage, epoch + 1,
                         epochs, step + 1, steps, float(sums["loss"]) / n_img, rate)
            t_data = time.perf_counter()
            timer.mark("other")
        _check_finite(finite, phase, stage, epoch, step)
        distributed.average_buffers(model)
        dt = time.perf_counter() - t0
        seen_images += n_img
        means = {k: float(v) / max(1, n_img) for k, v in sums.items()}
        img_s = n_img * world / dt if dt > 0 else math.nan
        elapsed = time.perf_counter() - stage_start
        eta = elapsed / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
        log.info("phase %d %-17s epoch %3d/%d  loss %.4f  lr %.4g  %6.0f img/s  data-wait %4.1f%%  eta %4.0fs",
                 phase, stage, epoch + 1, epochs, means.get("loss", math.nan), lr, img_s,
                 100 * wait / dt if dt else 0, eta)
        last = {"phase": phase, "stage": stage, "epoch": epoch, "lr": lr, "img_s": round(img_s, 1),
                "images": n_img * world, "data_wait_share": round(wait / dt, 4) if dt else 0.0,
                "seconds": round(dt, 3), "peak_mem_mb": round(peak_memory_mb(engine.device), 1),
                **timer.end_epoch(n_img),      # all ranks: global and per-rank img/s, split, memory
                **{f"loss_{k}" if k != "loss" else "loss": round(v, 6) for k, v in means.items()}}
        events.write(event="epoch", **last)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    total = time.perf_counter() - stage_start
    events.write(event="stage", phase=phase, stage=stage, seconds=round(total, 3),
                 engine_setup_s=round(getattr(engine, "setup_s", 0.0), 3))
    return {"seconds": total, "img_s": seen_images * world / total if total > 0 else math.nan,
            "final_loss": last.get("loss", math.nan), "profile": timer.summary()}
