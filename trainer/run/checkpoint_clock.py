"""When a training stage checkpoints inside itself: by time, not by epoch count.

An ImageNet-1k incremental epoch is a few dozen steps, under a second of compute on 8 GPUs, while a
checkpoint saves the engine's weights and momentum (about 94 MB at ResNet-18) and passes two barriers: saved
after every epoch it could double a phase. A checkpoint is due at the first epoch end `minutes` after the stage
started or last saved (0: at every epoch end), so a crash or requeue loses at most about that much training.
Every rank must make the same call (saving is collective), so rank 0's clock decides for all.
"""
from __future__ import annotations

import time

from trainer.engine import distributed


class CheckpointClock:
    def __init__(self, minutes: float):
        self.seconds = 60.0 * minutes
        self.since = time.monotonic()

    def due(self) -> bool:
        """Whether to checkpoint at this epoch end (the same answer on every rank)."""
        if self.seconds <= 0:
            return True
        return bool(distributed.rank0_value(time.monotonic() - self.since >= self.seconds))

    def saved(self) -> None:
        self.since = time.monotonic()
