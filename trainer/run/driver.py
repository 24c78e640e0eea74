"""The run driver: `run(cfg, run_dir)` is the single entry point every launcher calls.

It always resumes: `Session.open` loads the newest intact sealed phase of `run_dir`, and training
continues with the next phase. Each phase (phase.py) grows the model, trains it on D_i ∪ E_{0:i-1}
(model level), updates the exemplar memory (exemplar level), fine-tunes on the balanced exemplars,
evaluates on all seen classes, seals the phase and rewrites metrics.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

from core import stop
from trainer.engine import distributed
from trainer.run.phase import Phase
from trainer.run.session import Session

log = logging.getLogger("mnemo")


def run(cfg, run_dir: str | Path, stop_after_phase: int | None = None) -> dict:
    """Train (resuming) up to the last phase, or only up to `stop_after_phase` (one job per phase).

    A multi-process run destroys its process group when it ends (each of its processes is a worker
    that exits with the run). A single process keeps its in-memory group, so that an in-process caller
    (a test, a notebook, submitit's debug executor) can run again: DeepSpeed keeps references to the
    groups it was first given."""
    session = Session.open(cfg, run_dir)
    stopped = False
    try:
        total = session.plan.num_phases
        last = total if stop_after_phase is None else min(total, stop_after_phase + 1)
        for phase in range(session.start, last):
            session.caches["train"].images.clear()      # a phase's train classes are never read again
            Phase(session, phase).run()
            if phase + 1 < last and stop.armed() and distributed.any_true(stop.requested()):
                session.events.write(event="stop", phase=phase, stage="sealed", why=stop.why())
                raise stop.StopRequested(f"stopped after sealing phase {phase} ({stop.why()})")
        if session.dist.is_main:
            session.metrics.write(session.run_dir.metrics_path)
            log.info("results for %s\n%s", session.run_dir.path, session.metrics.table())
        session.events.write(event="end")
        session.events.close()
        return session.metrics.summary()
    except stop.StopRequested:
        stopped = True          # ranks may stop at different points (the exemplar level): no collective shutdown
        raise
    finally:
        if session.dist.world > 1 and not stopped:
            distributed.shutdown()
