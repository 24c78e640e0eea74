"""Comparing a stored config with a new one: which keys differ, and which of them a run reads.

A resumed run continues the experiment it started, so it refuses a config that changes anything it reads: the
protocol, the model, its strategy's name and settings and, where the strategy keeps exemplars, the memory, its
codec's and its selection's settings (narrowed by the selection: optimised reads its shared keys and its own
objective's) and, when it adjusts old exemplars, the adjustment's. A default it never reads (another strategy's, another
objective's) may change between releases without blocking a resume. `train.base_from` compares more: every
key that phase-0 training could read (trainer/run/base_from.py).
"""
from __future__ import annotations

from exemplars.adjustments.base import REGISTRY as ADJUSTMENTS
from exemplars.codecs.base import REGISTRY as CODECS
from exemplars.selections.base import REGISTRY as SELECTIONS
from trainer.methods.strategies.base import REGISTRY as STRATEGIES

# Keys a run reads that change how a result is computed, not the result (activation checkpointing recomputes
# the same values): a resumed run may change them, e.g. after running out of memory.
NEUTRAL_KEYS = ("exemplars.optimised.unrolled.checkpoint", "exemplars.optimised.unrolled.checkpoint_segment")
_MISSING = object()


def config_diffs(stored, new, default, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key, stored value, new value) for every leaf where a stored config differs from a new one; a key the
    stored config lacks (written by an older mnemo) counts as `default`'s value."""
    if stored is _MISSING:
        stored = default
    if isinstance(stored, dict) and isinstance(new, dict):
        out = []
        default = default if isinstance(default, dict) else {}
        for k in sorted(set(stored) | set(new)):
            key = f"{prefix}.{k}" if prefix else k
            out += config_diffs(stored.get(k, _MISSING), new.get(k), default.get(k), key)
        return out
    return [] if stored == new else [(prefix, stored, new)]


def _section(prefix: str, keys: list[str]) -> list[str]:
    return [f"{prefix}.{k}" if k else prefix for k in keys]


def keys_read(cfg) -> list[str]:
    """The dotted keys (sections or single keys) of `cfg` that a run with it reads: what its resume compares."""
    strategy = STRATEGIES.get(cfg.strategy.name)
    keys = ["protocol", "model", "strategy.name"]
    if strategy.settings_type() is not None:
        keys += _section(f"strategy.{strategy.name}",
                         strategy.section_keys(getattr(cfg.strategy, strategy.name)))
    if not strategy.uses_exemplars:
        return keys
    ex = cfg.exemplars
    keys += ["exemplars.selection", "exemplars.per_class", "exemplars.budget", "exemplars.group_size",
             "exemplars.adjust_old", "exemplars.codec"]
    for kind, name in ((SELECTIONS, ex.selection), (CODECS, ex.codec)):
        plugin = kind.get(name)
        if plugin.settings_type() is not None:
            keys += _section(f"exemplars.{plugin.name}", plugin.section_keys(getattr(ex, plugin.name)))
    if ex.adjust_old:
        keys += ["exemplars.adjustment", *ADJUSTMENTS.get(ex.adjustment).keys_read(ex)]
    return keys


def read_diffs(stored: dict, new: dict, default: dict, keys: list[str]) -> list[str]:
    """'key (stored -> new)' for every difference under `keys` (keys_read), NEUTRAL_KEYS aside."""
    def read(key: str) -> bool:
        return key not in NEUTRAL_KEYS and any(key == k or key.startswith(k + ".") for k in keys)
    return [f"{key} ({a!r} -> {b!r})" for key, a, b in config_diffs(stored, new, default) if read(key)]
