"""RUN/launch.json (what was submitted) and what the run directory says is done.

launch.json: {"version": 1, "cluster", "mode", "folder" (submitit logs), "config" (resolved config,
for `resume`), "jobs": [{"job_id", "phase" (chain: the phase it ends with; requeue: null), "mode",
"submitted_at", "state"? (local/debug runs: final state recorded by the launcher)}]}.
Writes go to a temporary file and `os.replace`, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
from pathlib import Path

from core import atomic
from core.errors import UserError

LAUNCH_FILE = "launch.json"
VERSION = 1


def path(run_dir: Path) -> Path:
    return Path(run_dir) / LAUNCH_FILE


def load(run_dir: Path) -> dict | None:
    p = path(run_dir)
    if not p.is_file():
        return None
    try:
        state = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p} is not valid JSON (line {e.lineno}); fix or remove it") from None
    if state.get("version") != VERSION:
        raise UserError(f"{p} has launch state version {state.get('version')}, this mnemo writes {VERSION}")
    return state


def require(run_dir: Path) -> dict:
    state = load(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no {LAUNCH_FILE}: it was not started with `mnemo launch` "
                        "(start it with `mnemo launch --config C --run-dir R`)")
    return state


def save(run_dir: Path, state: dict) -> None:
    p = path(run_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(p, state, indent=1)


def sealed_phases(run_dir: Path) -> list[int]:
    """Phases whose RUN/phases/pNN/DONE marker exists (the trainer writes DONE last)."""
    root = Path(run_dir) / "phases"
    if not root.is_dir():
        return []
    return sorted(int(d.name[1:]) for d in root.iterdir()
                  if d.name[:1] == "p" and d.name[1:].isdigit() and (d / "DONE").is_file())


def next_phase(run_dir: Path) -> int:
    """The first phase a new job has to train (phases are sealed in order)."""
    done = sealed_phases(run_dir)
    return done[-1] + 1 if done else 0


def metrics(run_dir: Path) -> dict | None:
    p = Path(run_dir) / "metrics.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
