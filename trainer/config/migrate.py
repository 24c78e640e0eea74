"""Stored configs in an older layout, read in today's: keys that moved to another section.

A run directory's config.yaml is read back when the run resumes, when another run starts from its phase 0
(train.base_from) and by the analysis tools. Keys that moved are carried to their place (a dropped key is
left out), so an older run directory compares with, and loads as, a config of today. A user's own recipe or
override that still names a moved key is refused with the key to write instead (`check_current`).

One rename changed what a name means: `exemplars.selection=mnemonics` ran the objective descent per class group
(any objective, the recommended `prototype` by default) until it became the paper's method in the paper's form;
that descent is now `exemplars.selection=optimised`, its section `exemplars.optimised`. A stored config from before
(it has an `exemplars.mnemonics` section and no `exemplars.optimised`) is read with both renamed, so it resumes
and compares as what it ran, and `renamed` says which keys give it back.
"""
from __future__ import annotations

import copy

from core.errors import UserError

_UNROLLED = ("inner_steps", "inner_lr", "checkpoint", "checkpoint_segment", "inner_batch_size", "val_bn",
             "inner_bn", "meta_loss", "start", "snapshot_epoch", "meta_data")
_FOLDS = {"folds": "k", "adjust_lr": "lr", "adjust_anchor": "anchor", "adjust_momentum": "momentum",
          "adjust_augment": "augment", "adjust_epochs": "epochs", "adjust_steps_per_epoch": "steps_per_epoch",
          "adjust_lr_halve_every": "lr_halve_every"}
# old dotted key -> new dotted key (None: the key was dropped: it changed nothing a run computes). The
# exemplar objectives' and the adjustment's settings once lived together in exemplars.mnemonics.
MOVED: dict[str, str | None] = {
    **{f"exemplars.mnemonics.{k}": f"exemplars.mnemonics.unrolled.{k}" for k in _UNROLLED},
    "exemplars.mnemonics.cosine_scale": "exemplars.mnemonics.prototype.cosine_scale",
    "exemplars.mnemonics.embedders": "exemplars.mnemonics.matching.embedders",
    "exemplars.mnemonics.match": "exemplars.mnemonics.matching.match",
    **{f"exemplars.mnemonics.{old}": f"exemplars.folds.{new}" for old, new in _FOLDS.items()},
    "exemplars.mnemonics.seed": None,      # seeded only calls made outside a run without a generator
    "train.checkpoint_every": None,        # checkpoints inside a stage are timed: train.checkpoint_minutes
}
# what to write instead of a dropped key, where something replaces it
INSTEAD = {"train.checkpoint_every": "checkpoint by time instead: train.checkpoint_minutes (0: every epoch end)"}


def _pop(data: dict, dotted: str):
    *path, last = dotted.split(".")
    node = data
    for part in path:
        node = node.get(part)
        if not isinstance(node, dict):
            return False, None
    if last not in node:
        return False, None
    return True, node.pop(last)


def _put(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node.setdefault(last, value)


# keys of the objective descent's section that the paper's method does not have: in a recipe's exemplars.mnemonics
# they were written for the descent, which is exemplars.optimised now
DESCENT_ONLY = ("objective", "init", "momentum", "augment", "prototype", "matching")


def _before_rename(data: dict) -> bool:
    """Whether a stored config was written while `mnemonics` named the objective descent (before `optimised`)."""
    ex = data.get("exemplars")
    return isinstance(ex, dict) and "optimised" not in ex and ("mnemonics" in ex or ex.get("selection") == "mnemonics")


def migrate(stored: dict) -> dict:
    """`stored` (a config read from a run directory) with every moved key at its place today; a copy."""
    data = copy.deepcopy(stored)
    for old, new in MOVED.items():
        found, value = _pop(data, old)
        if found and new is not None:
            _put(data, new, value)
    if _before_rename(data):
        ex = data["exemplars"]
        if "mnemonics" in ex:
            ex["optimised"] = ex.pop("mnemonics")
        if ex.get("selection") == "mnemonics":
            ex["selection"] = "optimised"
    return data


def renamed(stored: dict) -> list[str]:
    """What a user must know of a stored config (as read, before `migrate`) whose names changed meaning: the keys
    that give back what it ran. Empty for a config of today."""
    if not _before_rename(stored) or stored["exemplars"].get("selection") != "mnemonics":
        return []
    return ["this run was started when exemplars.selection=mnemonics named the objective descent per class group; "
            "that is exemplars.selection=optimised now, with its settings under exemplars.optimised (write "
            "exemplars.optimised.KEY for each exemplars.mnemonics.KEY you gave), while exemplars.selection=mnemonics "
            "is the paper's method in its form"]


def check_current(data: dict) -> None:
    """UserError naming the first key of `data` (a recipe with its overrides) that has moved, and where to."""
    missing = object()
    for old, new in MOVED.items():
        node = data
        for part in old.split("."):
            node = node.get(part, missing) if isinstance(node, dict) else missing
            if node is missing:
                break
        else:
            where = f"is now '{new}'" if new else "was dropped (it changed nothing a run computes): " + \
                INSTEAD.get(old, "remove it")
            raise UserError(f"config key '{old}' {where}")
    section = (data.get("exemplars") or {}).get("mnemonics")
    for key in DESCENT_ONLY:
        if isinstance(section, dict) and key in section:
            raise UserError(f"config key 'exemplars.mnemonics.{key}' is now 'exemplars.optimised.{key}': the "
                            f"objective descent is exemplars.selection=optimised, and exemplars.selection=mnemonics "
                            f"is the paper's method in its form, which has no '{key}'")
