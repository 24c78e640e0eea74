"""Fault injection for crash-safety tests: `MNEMO_FAULT=point:phase[:epoch]` SIGKILLs this process.

Points: `train` (after the given epoch of the phase's "train" stage), `train_step` (after the given step of that
stage, counted from its start), `exemplars` (in the middle of the exemplar level, after new exemplars are
chosen), `mnemonics` (after the given outer step of a class group's pixel optimisation), `seal` (after model.pt
is written, before DONE). With `MNEMO_FAULT_SIGNAL=USR2` the process sends itself that signal instead (a time
limit's warning, core/stop.py) and carries on.
With `MNEMO_FAULT_ONCE=FILE` the fault fires only if FILE does not exist yet (it is created first),
so the resumed process runs through; with `MNEMO_FAULT_RANK=R` only the process of rank R (the RANK
variable) fires. Unset in normal use: then every call is a no-op.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path


def maybe_fail(point: str, phase: int, epoch: int | None = None) -> None:
    spec = os.environ.get("MNEMO_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != point or int(parts[1]) != phase:
        return
    if len(parts) > 2 and (epoch is None or int(parts[2]) != epoch):
        return
    rank = os.environ.get("MNEMO_FAULT_RANK")
    if rank is not None and os.environ.get("RANK", "0") != rank:
        return
    once = os.environ.get("MNEMO_FAULT_ONCE")
    if once:
        if Path(once).exists():
            return
        Path(once).touch()
    sent = os.environ.get("MNEMO_FAULT_SIGNAL", "").strip().upper()
    os.kill(os.getpid(), getattr(signal, f"SIG{sent}") if sent else signal.SIGKILL)
