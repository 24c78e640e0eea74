"""RUN/events.jsonl: one JSON line per epoch/stage (losses, lr, img/s, data-wait share, memory)."""
from __future__ import annotations

import json
import time
from pathlib import Path


class EventLog:
    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **event) -> None:
        if self.path is None:
            return
        event = {"time": round(time.time(), 3), **event}
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
