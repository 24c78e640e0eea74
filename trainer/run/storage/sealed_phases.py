"""Sealed phase directories and the run directory's config guard.

RUN/phases/pNN/ holds model.pt, memory.pt, state.pt (strategy, metrics, plan) and DONE. A phase is
written into a temporary directory, DONE is written last (listing every file and its size), then the
directory is renamed into place: a crash never leaves a pNN that looks complete. On resume the newest
pNN whose DONE matches its files is used; a damaged one is skipped with a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import yaml

from core import faults
from core.errors import UserError
from trainer.run.storage import checkpoint_io

log = logging.getLogger(__name__)
# A resumed run continues the experiment it started: these sections may not change. The exemplar level
# decides every later phase's memory, so a default that changed since the run started (issue 20 made the
# recommended objective the default of selection=mnemonics) must not silently turn it into another run.
GUARDED_SECTIONS = ("protocol", "strategy", "model", "exemplars")
# Keys of those sections that change how a result is computed, not the result (activation checkpointing
# recomputes the same values): a resumed run may change them, e.g. after running out of memory.
NEUTRAL_KEYS = ("exemplars.mnemonics.checkpoint", "exemplars.mnemonics.checkpoint_segment")


def phase_dir(run_dir: Path, phase: int) -> Path:
    return run_dir / "phases" / f"p{phase:02d}"


def seal_phase(run_dir: Path, phase: int, model_sd: dict, memory_sd: dict, state: dict) -> Path:
    final = phase_dir(run_dir, phase)
    tmp = final.parent / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    checkpoint_io.save(tmp / "model.pt", model_sd)
    faults.maybe_fail("seal", phase)
    checkpoint_io.save(tmp / "memory.pt", memory_sd)
    checkpoint_io.save(tmp / "state.pt", state)
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    with open(tmp / "DONE", "w") as f:
        json.dump({"phase": phase, "files": files}, f)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters and buffers (to check that ranks hold identical weights)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _valid(d: Path) -> str | None:
    """None when the sealed phase is complete, else what is wrong."""
    done = d / "DONE"
    if not done.is_file():
        return "no DONE marker"
    try:
        files = json.loads(done.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable DONE marker"
    for name, size in files.items():
        p = d / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != size:
            return f"{name} has {p.stat().st_size} bytes, DONE says {size}"
    return None


def phase_problem(run_dir: Path, phase: int) -> str | None:
    """None when sealed phase `phase` of `run_dir` is intact, else what is wrong (for readers: mnemo report)."""
    d = phase_dir(run_dir, phase)
    return "its directory is missing" if not d.is_dir() else _valid(d)


def latest_sealed(run_dir: Path) -> int | None:
    root = run_dir / "phases"
    if not root.is_dir():
        return None
    phases = sorted((int(p.name[1:]) for p in root.iterdir() if p.is_dir() and p.name[:1] == "p"
                     and p.name[1:].isdigit()), reverse=True)
    for ph in phases:
        problem = _valid(phase_dir(run_dir, ph))
        if problem is None:
            return ph
        log.warning("phase directory %s is damaged (%s); falling back to the previous phase",
                    phase_dir(run_dir, ph), problem)
    return None


def load_file(run_dir: Path, phase: int, name: str):
    """One file of a sealed phase ("model.pt", "memory.pt" or "state.pt"), read as data only."""
    return checkpoint_io.load(phase_dir(run_dir, phase) / name)


def load_phase(run_dir: Path, phase: int) -> tuple[dict, dict, dict]:
    return tuple(load_file(run_dir, phase, name) for name in ("model.pt", "memory.pt", "state.pt"))


_MISSING = object()


def config_diffs(stored, new, default, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key, stored value, new value) for every leaf where a stored config differs from a new one; a
    key the stored config lacks (written by an older mnemo) counts as its default value. Used by the
    resume guard here and by train.base_from (trainer/run/base_from.py)."""
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


def guard_config(run_dir: Path, cfg_dict: dict, defaults: dict | None = None) -> None:
    """Refuse to resume a run with a different protocol, strategy, model or exemplar level. `defaults`: what a
    key the stored config lacks stood for when it was written (trainer.config.stored_defaults)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text()) or {}
    diffs = []
    for section in GUARDED_SECTIONS:
        stored, default = old.get(section, _MISSING), (defaults or {}).get(section)
        diffs += [f"{key} ({a!r} -> {b!r})"
                  for key, a, b in config_diffs(stored, cfg_dict.get(section), default, section)
                  if key not in NEUTRAL_KEYS]
    if diffs:
        raise UserError(f"run directory {run_dir} was started with a different configuration: "
                        f"{'; '.join(diffs)}. Use a new --run-dir, or restore these keys to resume")
