"""Reuse another run's trained phase-0 model (`train.base_from: RUN_DIR`).

Ablations over exemplar selection, adjustment or weight transfer share the base phase: phase 0's
training does not depend on any of them, so training it once per (seed, strategy, protocol) and
starting every variant from it saves a third of a glyph run and days at ImageNet scale. The reused
model is the base run's sealed phase 0 (`RUN/phases/p00/model.pt`): every strategy's phase 0 is
"train" then "exemplars", and the exemplar update does not touch the model, so this is exactly the
weights after phase-0 training. The new run then selects its own phase-0 exemplars from it.

Because later phases never depend on the global RNG state left by earlier ones (a resumed run equals
an uninterrupted one), a run started from a base equals the run that trained the base itself when
their configurations are equal. Only keys that phase-0 training cannot see may differ; any other
difference is refused with the keys named.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from core.errors import UserError
from trainer.config import stored_config
from trainer.config.compare import config_diffs
from trainer.run.storage import sealed_phases

# Keys phase-0 training does not read (the exemplar level, later-phase-only settings, bookkeeping).
FREE_KEYS = (
    "exemplars", "eval", "launch", "train.base_from", "train.weight_transfer", "train.incremental_lr",
    "train.finetune_epochs", "train.finetune_lr", "train.checkpoint_minutes", "train.log_every",
    "data.workers", "data.cache_max_gb", "data.exemplar_share",
)


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in FREE_KEYS)


def base_dir(cfg_dict: dict) -> Path | None:
    path = (cfg_dict.get("train") or {}).get("base_from")
    return Path(path) if path else None


def check(cfg_dict: dict, defaults: dict) -> Path | None:
    """The base run's directory when `train.base_from` is set and usable; UserError naming the problem."""
    base = base_dir(cfg_dict)
    if base is None:
        return None
    problem = sealed_phases.phase_problem(base, 0)
    if problem is not None:
        raise UserError(f"train.base_from={base}: its phase 0 is not usable ({problem}); "
                        "point it at a run directory whose phase 0 finished")
    try:
        stored = stored_config(base / "config.yaml")
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"train.base_from={base}: cannot read its config.yaml ({e})") from None
    diffs = [f"{key} ({there!r} there, {here!r} here)"
             for key, there, here in config_diffs(stored, cfg_dict, defaults) if not _free(key)]
    if diffs:
        raise UserError(f"train.base_from={base}: its phase 0 was trained with a different configuration: "
                        f"{'; '.join(diffs)}. Only exemplar-level and later-phase keys may differ")
    return base


def load_into(model: torch.nn.Module, base: Path) -> None:
    """Load the base run's phase-0 weights into `model` (grown to the base classes)."""
    model.load_state_dict(sealed_phases.load_file(base, 0, "model.pt"))
