"""Submit a run (or what is left of it), and cancel it.

chain:   one job per remaining phase k, job k runs `run(cfg, R, stop_after_phase=k)` and depends on
         job k-1 (`afterok`, `kill-on-invalid-dep=yes`: a failed phase cancels the rest of the chain).
requeue: one job runs `run(cfg, R)`; on a time-out or preemption signal it requeues itself and resumes.
On SLURM, submitting returns at once (`mnemo launch status R` follows the run); `local` runs the jobs
as subprocesses and `debug` in this process, one after the other, and return when they end.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from submitit.core.utils import FailedJobError

from core.errors import UserError
from launch import executors
from launch import state as launch_state
from launch.job import TrainJob
from launch.status import ACTIVE, pid_alive, short_exception, slurm_states


def _plan(cfg, run_dir: Path) -> list[int | None]:
    """Phases to submit jobs for (chain), or [None] for one job running them all (requeue)."""
    total = cfg.protocol.phases + 1
    first = launch_state.next_phase(run_dir)
    if first >= total:
        return []
    return list(range(first, total)) if cfg.launch.mode == "chain" else [None]


def _describe(lc) -> str:
    gpus = f", {lc.gpus_per_node} GPUs/node" if lc.gpus_per_node else ", CPU only"
    return (f"{lc.nodes} node(s) x {executors.tasks_per_node(lc)} task(s){gpus}, {lc.cpus_per_task} CPUs/task, "
            f"time limit {lc.time_min} min")


def dry_run(cfg, run_dir: Path, echo=print) -> list[str]:
    """Print (and return) the sbatch scripts the launch would submit; needs no SLURM."""
    lc = cfg.launch
    executors.check(lc)
    run_dir = Path(run_dir).resolve()
    phases = _plan(cfg, run_dir)
    folder = run_dir / "submitit"
    echo(f"# dry run: {len(phases)} {lc.mode} job(s) for {run_dir} on {lc.cluster} ({_describe(lc)})")
    if lc.cluster != "slurm":
        echo(f"# --cluster {lc.cluster} writes no sbatch scripts; these are what --cluster slurm would submit")
    scripts, prev = [], None
    for i, phase in enumerate(phases):
        dep = f"afterok:<job {prev}>" if prev is not None else None
        label = f"phase {phase}" if phase is not None else f"phases {launch_state.next_phase(run_dir)}-" \
                                                             f"{cfg.protocol.phases}, requeues itself"
        script = executors.render_sbatch(lc, folder, dep)
        echo(f"# ---- job {i + 1}/{len(phases)}: {label}" + (f" (runs after job {prev} succeeds)" if dep else ""))
        echo(script)
        scripts.append(script)
        prev = i + 1
    return scripts


def _active_jobs(st: dict) -> list[str]:
    if st["cluster"] != "slurm":           # local jobs are processes (the id is the pid); debug ones are gone
        return [j["job_id"] for j in st["jobs"] if j.get("state") in ACTIVE and st["cluster"] == "local"
                and pid_alive(j["job_id"])]
    live = slurm_states([j["job_id"] for j in st["jobs"]])
    return [jid for jid, s in live.items() if s in ACTIVE]


def submit(cfg, run_dir: Path, echo=print) -> dict:
    """Submit jobs for every phase not sealed yet; returns the updated launch state."""
    lc = cfg.launch
    executors.check(lc)
    run_dir = Path(run_dir).resolve()
    st = launch_state.load(run_dir)
    if st is not None:
        active = _active_jobs(st)
        if active:
            raise UserError(f"{run_dir} still has active jobs ({', '.join(active)}): wait for them, or stop them "
                            f"with `mnemo launch cancel {run_dir}` first")
    phases = _plan(cfg, run_dir)
    if not phases:
        echo(f"{run_dir}: all {cfg.protocol.phases + 1} phases are sealed, nothing to submit")
        return st or {}
    folder = run_dir / "submitit"
    folder.mkdir(parents=True, exist_ok=True)
    executors.make_executor(lc, folder)     # fails early (UserError) where the cluster is missing
    st = st or {"version": launch_state.VERSION, "jobs": [], "submissions": 0}
    st.update(cluster=lc.cluster, mode=lc.mode, folder=str(folder), config=cfg.to_dict())
    st["submissions"] += 1
    launch_state.save(run_dir, st)
    echo(f"{run_dir}: submitting {len(phases)} {lc.mode} job(s) to {lc.cluster} ({_describe(lc)})")
    if lc.cluster == "slurm":
        prev = None
        for phase in phases:
            ex = executors.make_executor(lc, folder)
            ex.update_parameters(**executors.sbatch_parameters(lc, f"afterok:{prev}" if prev else None))
            try:
                job = ex.submit(TrainJob(), cfg, str(run_dir), phase)
            except FailedJobError as e:
                what = f"phase {phase}" if phase is not None else "the run"
                why = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                done = [j["job_id"] for j in st["jobs"] if j.get("submission") == st["submissions"]]
                hint = f" (jobs {', '.join(done)} were submitted: `mnemo launch cancel {run_dir}`)" if done else ""
                raise UserError(f"sbatch refused the job for {what}: {why}{hint}") from None
            _record(run_dir, st, job.job_id, phase, lc.mode)
            echo(f"  job {job.job_id}: " + (f"phase {phase}" if phase is not None else "all phases (requeueable)")
                 + (f", after job {prev}" if prev else ""))
            prev = job.job_id
        echo(f"follow it with: mnemo launch status {run_dir}")
        return st
    for phase in phases:                 # local / debug: one job at a time, in the foreground
        job = executors.make_executor(lc, folder).submit(TrainJob(), cfg, str(run_dir), phase)
        rec = _record(run_dir, st, str(job.job_id), phase, lc.mode, state="RUNNING")
        try:
            job.result()
            rec["state"] = "COMPLETED"
        except KeyboardInterrupt:
            rec["state"] = "CANCELLED"
            launch_state.save(run_dir, st)
            raise
        except Exception as e:  # noqa: BLE001 -- the job's own error, recorded for `status`
            rec.update(state="FAILED", error=short_exception(str(e)) or type(e).__name__)
            launch_state.save(run_dir, st)
            echo(f"  job {job.job_id} failed: {rec['error']}")
            return st
        launch_state.save(run_dir, st)
        echo(f"  job {job.job_id}: " + (f"phase {phase} done" if phase is not None else "all phases done"))
    return st


def _record(run_dir: Path, st: dict, job_id: str, phase, mode: str, **extra) -> dict:
    rec = {"job_id": str(job_id), "phase": phase, "mode": mode, "submission": st["submissions"],
           "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    st["jobs"].append(rec)
    launch_state.save(run_dir, st)
    return rec


def cancel(run_dir: Path, echo=print) -> list[str]:
    run_dir = Path(run_dir).resolve()
    st = launch_state.require(run_dir)
    if st["cluster"] != "slurm":
        raise UserError(f"{run_dir} was launched with --cluster {st['cluster']}, which runs in the foreground: "
                        "stop it with Ctrl-C")
    active = _active_jobs(st)
    if not active:
        echo(f"{run_dir}: no active jobs")
        return []
    r = subprocess.run(["scancel", *active], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise UserError(f"scancel {' '.join(active)} failed: {r.stderr.strip()}")
    st["cancelled"] = {"jobs": active, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    launch_state.save(run_dir, st)
    echo(f"{run_dir}: cancelled jobs {', '.join(active)}")
    return active
