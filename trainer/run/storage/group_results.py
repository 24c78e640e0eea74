"""RUN/ckpt/groups/pNN/: the exemplar level's finished class groups of the phase in progress, one file each.

Each rank keeps the result of every class group it finishes (exemplars.update.GroupResults), so a stop or a
crash inside the exemplar level, which at ImageNet scale takes 25-45 minutes a group, resumes at the next group
instead of its start. The results hold for the model the level started from: they go when the phase is restarted
from its beginning and with the rest of RUN/ckpt/ when the phase is sealed.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from core.errors import UserError
from trainer.run.storage import checkpoint_io

log = logging.getLogger(__name__)


def groups_root(run_dir: Path) -> Path:
    return Path(run_dir) / "ckpt" / "groups"


class GroupStore:
    def __init__(self, run_dir: Path, phase: int):
        self.dir = groups_root(run_dir) / f"p{phase:02d}"

    def load(self, key: str) -> dict[int, torch.Tensor] | None:
        path = self.dir / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            return {int(label): x for label, x in checkpoint_io.load(path).items()}
        except UserError:
            raise                    # not damage: a file mnemo did not write (checkpoint_io)
        except Exception as e:  # damaged: the group runs again
            log.warning("kept class group %s is unusable (%s); it runs again", path, e)
            return None

    def save(self, key: str, result: dict[int, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        checkpoint_io.save(self.dir / f"{key}.pt", {int(label): x.detach().cpu() for label, x in result.items()})


def clear(run_dir: Path) -> None:
    shutil.rmtree(groups_root(run_dir), ignore_errors=True)
