"""Where a process stands in a run: its rank, the number of ranks, its rank on the node and its device.

One object from the ground floor up: the loaders, the exemplar level, evaluation and the engine all take
it whole rather than rank, world size and device one by one. `trainer.engine.distributed.init` makes the
real one; `SINGLE` is a lone process on the CPU (tests, tools that never join a process group).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()
