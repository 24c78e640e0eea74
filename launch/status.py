"""`mnemo launch status`: phases done, job ids and states, the last error, an ETA.

Job states come from SLURM (`sacct`, falling back to `squeue` where accounting is off); the error of a
failed job from submitit's result pickle (the job's traceback) or the tail of its stderr log; the ETA
from the phase wall times the trainer wrote into metrics.json.
"""
from __future__ import annotations

import os
import pickle
import re
import subprocess
from pathlib import Path

from submitit.core.utils import JobPaths

from launch import state as launch_state

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "SUBMITTED"}
FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def _run(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """JobID -> SLURM state (first word: 'CANCELLED by 0' -> CANCELLED); jobs SLURM forgot are left out."""
    if not job_ids:
        return {}
    ids = ",".join(job_ids)
    out = _run(["sacct", "-X", "-n", "--parsable2", "-o", "JobID,State", "-j", ids])
    if not out:    # no accounting: the controller's job records (kept MinJobAge seconds after the end)
        out = _run(["squeue", "-h", "-a", "-r", "--states=all", "-o", "%i|%T", "-j", ids])
    states = {}
    for line in (out or "").splitlines():
        jid, _, st = line.strip().partition("|")
        if jid in job_ids and st:
            states[jid] = st.split()[0].rstrip("+")
    return states


def slurm_details(job_id: str) -> dict:
    """Reason and restart count of a job the controller still knows (`scontrol show job`)."""
    out = _run(["scontrol", "show", "job", "-o", str(job_id)]) or ""
    fields = dict(re.findall(r"(\w+)=(\S*)", out))
    return {k: v for k, v in (("reason", fields.get("Reason")), ("restarts", fields.get("Restarts"))) if v}


def _result(folder: Path, job_id: str):
    p = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    try:
        with open(p, "rb") as f:
            return pickle.load(f)           # submitit writes ("success", value) or ("error", traceback)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ValueError):
        return None


def short_exception(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    m = re.match(r"^([\w.]+(?:Error|Exception|Exit|Interrupt)): ?(.*)$", lines[-1])
    return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}" if m else lines[-1]


def job_error(folder: Path, job_id: str) -> str | None:
    """The error a job ended with: its Python exception, else the last error line of its stderr."""
    res = _result(folder, job_id)
    if isinstance(res, tuple) and len(res) == 2 and res[0] == "error":
        return short_exception(str(res[1]))
    err = JobPaths(folder, job_id=job_id, task_id=0).stderr
    try:
        tail = err.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return None
    hits = [ln.strip() for ln in tail if re.search(r"Error|Exception|error:|Killed|CANCELLED|TIME LIMIT", ln)]
    return hits[-1] if hits else None


def phase_in_log(folder: Path, job_id: str) -> int | None:
    """The last phase a job started, from the trainer's "phase K/N: ..." log line in its stderr."""
    try:
        text = JobPaths(folder, job_id=job_id, task_id=0).stderr.read_text(errors="replace")
    except OSError:
        return None
    hits = re.findall(r"\bphase (\d+)/\d+: ", text)
    return int(hits[-1]) if hits else None


def pid_alive(job_id: str) -> bool:
    """Whether a local job's process (submitit's local job id is its pid) still runs."""
    try:
        os.kill(int(job_id), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def _job_state(st: dict, job: dict, live: dict[str, str]) -> str:
    jid = job["job_id"]
    if st["cluster"] == "slurm" and jid in live:
        return live[jid]
    recorded = job.get("state")             # written by a foreground (local/debug) launch
    if recorded and recorded != "RUNNING":
        return recorded
    res = _result(Path(st["folder"]), jid)
    if isinstance(res, tuple) and res:
        return "COMPLETED" if res[0] == "success" else "FAILED"
    if recorded == "RUNNING" and st["cluster"] == "local" and pid_alive(jid):
        return "RUNNING"
    return "UNKNOWN"


def eta(m: dict | None, total: int, done: int) -> tuple[float | None, float | None]:
    """(seconds left, seconds per phase) from the measured phase wall times (queue waits not included)."""
    phases = (m or {}).get("phases", [])
    walls = [p["wall_s"] for p in phases if p.get("phase", 0) > 0 and p.get("wall_s")] \
        or [p["wall_s"] for p in phases if p.get("wall_s")]
    if done >= total:
        return 0.0, (sum(walls) / len(walls) if walls else None)
    if not walls:
        return None, None
    per = sum(walls) / len(walls)
    return round(per * (total - done), 1), round(per, 2)


def report(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    st = launch_state.require(run_dir)
    m = launch_state.metrics(run_dir)
    sealed = launch_state.sealed_phases(run_dir)
    total = (m or {}).get("phases_total") or st["config"]["protocol"]["phases"] + 1
    done = sealed[-1] + 1 if sealed else 0
    live = slurm_states([j["job_id"] for j in st["jobs"]]) if st["cluster"] == "slurm" else {}
    folder = Path(st["folder"])
    jobs, last_error = [], None
    for job in st["jobs"]:
        entry = {"job_id": job["job_id"], "phase": job.get("phase"), "mode": job.get("mode", st["mode"]),
                 "state": _job_state(st, job, live)}
        if st["cluster"] == "slurm" and (entry["state"] not in ("COMPLETED",) or entry["mode"] == "requeue"):
            entry.update(slurm_details(job["job_id"]))
        if entry["state"] in FAILED or entry["state"] == "UNKNOWN":
            entry["error"] = job_error(folder, job["job_id"]) or job.get("error")
        if entry.get("error"):
            failed_phase = phase_in_log(folder, job["job_id"])
            if failed_phase is None:    # failed before its first phase started
                failed_phase = entry["phase"] if entry["phase"] is not None else done
            last_error = {"job_id": job["job_id"], "phase": failed_phase, "message": entry["error"]}
        jobs.append(entry)
    active = [j for j in jobs if j["state"] in ACTIVE]
    if done >= total:
        status = "complete"
    elif active:
        status = "running" if any(j["state"] == "RUNNING" for j in active) else "pending"
    elif last_error and any(j["job_id"] == last_error["job_id"] and j.get("submission") == st["submissions"]
                            for j in st["jobs"]):
        status = "failed"           # the latest submission ended with an error
    else:
        status = "stopped"
    eta_s, per_phase = eta(m, total, done)
    return {"run_dir": str(run_dir), "cluster": st["cluster"], "mode": st["mode"], "status": status,
            "phases_done": done, "phases_total": total, "sealed": sealed, "jobs": jobs, "active": len(active),
            "last_error": last_error, "eta_s": eta_s, "phase_s": per_phase, "folder": str(folder),
            "average_accuracy": (m or {}).get("average_accuracy"),
            "tensorboard": str(run_dir / "tb") if (run_dir / "tb").is_dir() else None}


def format_report(r: dict) -> str:
    lines = [f"run {r['run_dir']}: {r['status']}, {r['phases_done']}/{r['phases_total']} phases sealed "
             f"({r['mode']} mode on {r['cluster']}; job logs in {r['folder']})"]
    if r["jobs"]:
        lines.append("  job        phase  state")
        for j in r["jobs"]:
            phase = "all" if j["phase"] is None else f"{j['phase']:>3d}"
            extra = [f"{k} {j[k]}" for k in ("reason", "restarts") if j.get(k) and j.get(k) not in ("None", "0")]
            note = f"  ({', '.join(extra)})" if extra else ""
            lines.append(f"  {j['job_id']:<10s} {phase:>5s}  {j['state']}{note}")
    if r["last_error"]:
        e = r["last_error"]
        when = "last error" if r["status"] != "complete" else "earlier error (since resumed)"
        lines.append(f"{when}: phase {e['phase']} (job {e['job_id']}): {e['message']}")
    if r["status"] != "complete":
        if r["eta_s"] is None:
            lines.append("ETA: unknown until a phase has finished")
        else:
            lines.append(f"ETA: {r['eta_s'] / 60:.1f} min of training for {r['phases_total'] - r['phases_done']} "
                         f"phases at {r['phase_s']:.0f} s/phase (measured; queue waits not included)")
    if r["average_accuracy"] is not None and r["status"] == "complete":
        lines.append(f"average incremental accuracy {r['average_accuracy']:.2f} %")
    if r.get("tensorboard"):
        lines.append(f"curves: tensorboard --logdir {r['tensorboard']}   (or the folder of several runs)")
    return "\n".join(lines)
