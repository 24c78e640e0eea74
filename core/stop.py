"""A request to stop at the next safe point, as a job's time limit nears or it is preempted.

A signal handler may run only between two Python bytecodes of the main thread, and never while that thread
waits in a collective; a handler that saved and exited there would leave the other ranks waiting. So the
handler (`arm`) only records the request, and the run stops where its state can be saved whole:
* in a training stage, at a step boundary all ranks agree on (checked every MNEMO_STOP_CHECK_STEPS steps,
  default 8, and at every epoch end), after an in-stage checkpoint of that step;
* in the exemplar level, after a class group (each group's result is kept as it finishes), or while a rank
  waits for the others' groups;
* after a phase is sealed.
Then `StopRequested` is raised; whoever launched the run (launch/job.py) requeues the job.
"""
from __future__ import annotations

import os
import signal

_STATE = {"requested": False, "why": "", "armed": False}


class StopRequested(Exception):
    """The run stopped at a safe point, its state saved, because a stop was requested."""


def request(why: str = "a stop was requested") -> None:
    _STATE["requested"], _STATE["why"] = True, why


def requested() -> bool:
    return _STATE["requested"]


def why() -> str:
    return _STATE["why"]


def armed() -> bool:
    """Whether a stop can be requested in this process (a handler is installed, or one was requested)."""
    return _STATE["armed"] or _STATE["requested"]


def reset() -> None:
    _STATE.update(requested=False, why="", armed=False)


def arm(signum: int):
    """Record `signum` as a stop request from now on; returns the handler it replaces."""
    _STATE["armed"] = True
    return signal.signal(signum, lambda s, frame: request(f"signal {signal.Signals(s).name}"))


def check_every() -> int:
    """Steps between two checks of a training stage (each check is a small collective where ranks are many)."""
    raw = os.environ.get("MNEMO_STOP_CHECK_STEPS", "").strip()
    return max(1, int(raw)) if raw.isdigit() else 8
