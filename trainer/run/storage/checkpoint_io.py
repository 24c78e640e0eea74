"""Reading and writing the tensors of a run directory: data, never code.

A run directory may sit on a shared file system that others can write to, so nothing in it may run
code when it is read: checkpoints hold only tensors and plain containers and are loaded with
`torch.load(weights_only=True)`, whose unpickler accepts nothing else. A file that holds anything
else is refused with a one-line error naming it. DeepSpeed reads its own engine checkpoints with the
full unpickler, so `check_engine_checkpoint` reads every file of one with the safe loader first.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from core import atomic
from core.errors import UserError


def save(path: Path, obj) -> None:
    atomic.save_torch(path, obj)


def load(path: Path):
    """The tensors and plain containers saved at `path`; UserError when it holds anything else."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} holds more than tensors and plain containers ({first[:200]}); mnemo does not "
                        "write such files and will not run code from a run directory: restore it from a "
                        "trusted copy or start a new --run-dir") from None


def check_engine_checkpoint(directory: Path) -> None:
    """Refuse an engine checkpoint directory unless every file in it loads with the safe loader."""
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if path.suffix == ".pt":
            load(path)
