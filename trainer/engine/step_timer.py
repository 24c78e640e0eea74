"""Where the time of a training stage goes: data wait, forward, backward, optimizer step.

The epoch loop calls `mark(part)` when a part of a step ends ("data" when the batch is on the
device, "forward" after the strategy's loss, "backward" and "optimizer" from inside `Engine.step`,
"other" after the loop's bookkeeping); the time since the previous mark is charged to that part.

Clocks: on CPU every part is host wall time (`time.perf_counter`; CPU kernels are synchronous, so
no synchronisation is added). On CUDA the data wait is host time, and forward/backward/step are GPU
times between CUDA events recorded at the marks on the current stream; the events are read once per
epoch, after one synchronisation of the last event, so profiling adds no per-step synchronisation.

`end_epoch` gathers every rank's figures (one small all-gather per epoch) and returns the fields of
an events.jsonl "epoch" line: global and per-rank img/s, data-wait share, per-step milliseconds of
each part, and peak memory (CUDA: max allocated since the stage began; CPU: the process's peak RSS).
`summary()` condenses the stage for RUN/profile.json.
"""
from __future__ import annotations

import math
import resource
import time

import torch

from trainer.engine import distributed

PARTS = ("data", "forward", "backward", "optimizer", "other")
GPU_PARTS = ("forward", "backward", "optimizer")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # Linux: KiB


def reset_peak_memory(device: torch.device) -> None:
    """Start a per-stage peak on CUDA (the CPU figure is the process's peak RSS and cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


class StepTimer:
    """Per-epoch accounting of the parts of each step, for one rank."""

    def __init__(self, device: torch.device, world: int = 1, enabled: bool = True):
        self.device = device
        self.world = world
        self.enabled = enabled
        self.cuda = device.type == "cuda"
        self.clock = "cuda_events" if self.cuda else "host"
        self.epochs: list[dict] = []
        reset_peak_memory(device)
        self.start_epoch()

    # -- per step ------------------------------------------------------------------------------
    def start_epoch(self) -> None:
        self.host = dict.fromkeys(PARTS, 0.0)
        self.steps = 0
        self._events: list[list] = []          # CUDA: per step [data, forward, backward, optimizer] events
        self._t0 = self._last = time.perf_counter()

    def mark(self, part: str) -> None:
        now = time.perf_counter()
        self.host[part] += now - self._last
        self._last = now
        if part == "data":
            self.steps += 1
        if self.cuda and self.enabled and part in ("data", *GPU_PARTS):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            if part == "data":
                self._events.append([ev])
            elif self._events:
                self._events[-1].append(ev)

    def _gpu_seconds(self) -> dict[str, float]:
        done = [e for e in self._events if len(e) == 1 + len(GPU_PARTS)]
        out = dict.fromkeys(GPU_PARTS, 0.0)
        if not done:
            return out
        done[-1][-1].synchronize()
        for evs in done:
            for i, part in enumerate(GPU_PARTS):
                out[part] += evs[i].elapsed_time(evs[i + 1]) / 1000.0
        return out

    # -- per epoch -----------------------------------------------------------------------------
    def end_epoch(self, images: int) -> dict:
        """Figures of the epoch over all ranks (every rank must call this)."""
        seconds = time.perf_counter() - self._t0
        parts = dict(self.host)
        if self.cuda and self.enabled:
            parts.update(self._gpu_seconds())
        mine = {"images": images, "seconds": seconds, "steps": self.steps, "parts": parts,
                "peak_mem_mb": peak_memory_mb(self.device)}
        ranks = distributed.all_gather_object(mine)
        record = _combine(ranks)
        record["clock"] = self.clock
        self.epochs.append(record)
        self.start_epoch()
        return _event_fields(record)

    def summary(self) -> dict:
        """The stage over all its epochs (what RUN/profile.json keeps per stage)."""
        if not self.epochs:
            return {}
        n = len(self.epochs[0]["per_rank"])
        per_rank = []
        for r in range(n):
            rs = [e["per_rank"][r] for e in self.epochs]
            images, seconds = sum(x["images"] for x in rs), sum(x["seconds"] for x in rs)
            steps = sum(x["steps"] for x in rs)
            parts = {p: sum(x["parts"][p] for x in rs) for p in PARTS}
            per_rank.append({"images": images, "seconds": seconds, "steps": steps, "parts": parts,
                             "peak_mem_mb": max(x["peak_mem_mb"] for x in rs)})
        stage = _combine(per_rank)
        out = _event_fields(stage)
        out.update(epochs=len(self.epochs), clock=self.clock,
                   seconds=round(sum(e["seconds"] for e in self.epochs), 3))
        return out


def _combine(ranks: list[dict]) -> dict:
    images = sum(r["images"] for r in ranks)
    seconds = max(r["seconds"] for r in ranks)
    return {"images": images, "seconds": seconds, "per_rank": ranks,
            "img_s": images / seconds if seconds > 0 else math.nan}


def _rate(images: float, seconds: float) -> float:
    return round(images / seconds, 1) if seconds > 0 else None


def _event_fields(rec: dict) -> dict:
    ranks = rec["per_rank"]
    steps = max(1, sum(r["steps"] for r in ranks))
    mean_ms = {p: 1000.0 * sum(r["parts"][p] for r in ranks) / steps for p in PARTS}
    shares = [r["parts"]["data"] / r["seconds"] if r["seconds"] > 0 else 0.0 for r in ranks]
    out = {
        "img_s": _rate(rec["images"], rec["seconds"]),
        "img_s_per_rank": [_rate(r["images"], r["seconds"]) for r in ranks],
        "images": rec["images"],
        "images_per_rank": [r["images"] for r in ranks],
        "steps": max(r["steps"] for r in ranks),
        "data_wait_share": round(sum(shares) / len(shares), 4),
        "data_wait_share_per_rank": [round(s, 4) for s in shares],
        **{f"{p}_ms": round(v, 3) for p, v in mean_ms.items()},
        "peak_mem_mb": round(max(r["peak_mem_mb"] for r in ranks), 1),
        "peak_mem_mb_per_rank": [round(r["peak_mem_mb"], 1) for r in ranks],
    }
    return out
