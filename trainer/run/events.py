"""RUN/events.jsonl: one JSON line per epoch/stage/phase (losses, lr, img/s, data-wait share, memory,
accuracies), and the same records to TensorBoard (tensorboard.py) when a sink is attached.

The log keeps the run's global step: one per epoch, exemplar level and phase record, so every point
TensorBoard shows has a step of its own. It is saved with the run's state, so a resumed run continues it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

STEPPED = ("epoch", "exemplars", "phase")


class EventLog:
    optional_state = True                     # run directories written before the step existed lack it

    def __init__(self, path: Path | None, sink=None):
        self.path, self.sink = path, sink
        self.step = 0                         # records of STEPPED kinds so far in the run (TensorBoard's x axis)

    def write(self, **event) -> None:
        if event.get("event") in STEPPED:
            self.step += 1
        if self.path is None:
            return
        event = {"time": round(time.time(), 3), **event}
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
        if self.sink is not None:
            self.sink.record(event, self.step)

    def text(self, tag: str, text: str) -> None:
        if self.sink is not None:
            self.sink.text(tag, text)

    def image(self, tag: str, grid) -> None:
        if self.sink is not None:
            self.sink.image(tag, grid, self.step)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, sd: dict) -> None:
        self.step = int(sd["step"])
