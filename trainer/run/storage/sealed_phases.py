"""Sealed phase directories and the run directory's config guard (what it compares: trainer/config/compare.py).

RUN/phases/pNN/ holds model.pt, memory.pt, state.pt (strategy, metrics, plan) and DONE. A phase is
written into a temporary directory, DONE is written last (listing every file and its size), then the
directory is renamed into place: a crash never leaves a pNN that looks complete. On resume the newest
pNN whose DONE matches its files is used; a damaged one is skipped with a warning.

memory.pt holds what changed since the phase before (`memory_delta`): the exemplars of classes that are new or
whose exemplars changed (Eq. 10 adjusts old ones), and every class's length (a fixed-budget memory trims old
classes to a prefix). A 25-phase ImageNet-1k run so stores each exemplar about once, not 26 full memories of
3-6 GB. `load_file(..., "memory.pt")` composes the phase's full memory from the chain; a phase is intact only
while the phases its memory builds on are. A memory.pt without "from_phase" (older runs, phase 0) is whole.
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
from trainer.config import stored_config
from trainer.config.compare import read_diffs
from trainer.config.migrate import renamed
from trainer.run.storage import checkpoint_io

log = logging.getLogger(__name__)


def phase_dir(run_dir: Path, phase: int) -> Path:
    return run_dir / "phases" / f"p{phase:02d}"


def memory_delta(bank: dict, previous: dict | None, previous_phase: int | None) -> dict:
    """A memory state of `bank` as a change of `previous` (the bank sealed at `previous_phase`, or None: whole)."""
    if previous is None:
        return {"bank": dict(bank)}
    changed = {label: x for label, x in bank.items()
               if label not in previous or len(x) > len(previous[label])
               or not torch.equal(x, previous[label][: len(x)])}
    return {"bank": changed, "lengths": {label: len(x) for label, x in bank.items()}, "from_phase": previous_phase}


def _compose(run_dir: Path, phase: int, depth: int = 0) -> dict:
    sd = checkpoint_io.load(phase_dir(run_dir, phase) / "memory.pt")
    if "from_phase" not in sd:
        return sd
    if depth > 10_000 or not 0 <= sd["from_phase"] < phase:
        raise UserError(f"{phase_dir(run_dir, phase) / 'memory.pt'} builds on phase {sd['from_phase']}, not an "
                        "earlier one")
    before = _compose(run_dir, sd["from_phase"], depth + 1)["bank"]
    bank = {label: sd["bank"][label] if label in sd["bank"] else before[label][:n]
            for label, n in sd["lengths"].items()}
    return {"bank": bank}


def seal_phase(run_dir: Path, phase: int, model_sd: dict, memory_sd: dict, state: dict) -> Path:
    """Write sealed phase `phase`; `memory_sd` whole or as memory_delta's change of an earlier sealed phase."""
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
    done = {"phase": phase, "files": files}
    if "from_phase" in memory_sd:
        done["memory_from_phase"] = memory_sd["from_phase"]
    with open(tmp / "DONE", "w") as f:
        json.dump(done, f)
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
    """None when the sealed phase is complete (and the phases its memory builds on are), else what is wrong."""
    done = d / "DONE"
    if not done.is_file():
        return "no DONE marker"
    try:
        marker = json.loads(done.read_text())
        files = marker["files"]
    except (ValueError, KeyError):
        return "unreadable DONE marker"
    base = marker.get("memory_from_phase")
    if base is not None:
        if not isinstance(base, int) or base >= marker.get("phase", 0):
            return f"its memory builds on phase {base}, not an earlier one"
        problem = phase_problem(d.parent.parent, base)
        if problem:
            return f"its memory builds on phase {base}, where {problem}"
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
    """One file of a sealed phase ("model.pt", "memory.pt" or "state.pt"), read as data only; "memory.pt" is
    the phase's whole memory, composed from the phases it builds on."""
    if name == "memory.pt":
        return _compose(run_dir, phase)
    return checkpoint_io.load(phase_dir(run_dir, phase) / name)


def load_phase(run_dir: Path, phase: int) -> tuple[dict, dict, dict]:
    return tuple(load_file(run_dir, phase, name) for name in ("model.pt", "memory.pt", "state.pt"))


def guard_config(run_dir: Path, cfg_dict: dict, defaults: dict, keys: list[str]) -> None:
    """Refuse to resume a run whose config changes a key it reads (`keys`, trainer.config.compare.keys_read).
    `defaults`: what a key the stored config lacks stood for when it was written (trainer.config.stored_defaults)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    notes = renamed(yaml.safe_load(path.read_text()) or {})
    for note in notes:
        log.info("%s: %s", run_dir, note)
    diffs = read_diffs(stored_config(path), cfg_dict, defaults, keys)
    if diffs:
        raise UserError(f"run directory {run_dir} was started with a different configuration: "
                        f"{'; '.join(diffs)}. Use a new --run-dir, or restore these keys to resume"
                        + "".join(f" ({note})" for note in notes))
