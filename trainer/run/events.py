"""RUN/events.jsonl: one JSON line per epoch/stage (losses, lr, img/s, data-wait share, memory)."""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # Linux: KiB


class EventLog:
    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **event) -> None:
        if self.path is None:
            return
        event = {"time": round(time.time(), 3), **event}
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
