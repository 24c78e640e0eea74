"""submitit executors built from the config's `launch:` section, and the sbatch scripts they write.

The SLURM parameters are one dict (`sbatch_parameters`) used both by the real `SlurmExecutor` and by
`render_sbatch` for `--dry-run`, so what a dry run prints is what gets submitted.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import submitit
from submitit.slurm import slurm as submitit_slurm

from core.errors import UserError

CLUSTERS = ("slurm", "local", "debug")
MODES = ("chain", "requeue")
# The checkout holding this package: put on PYTHONPATH inside jobs so the pickled callable imports
# even when the package is not installed into the job's python (harmless when it is).
REPO_ROOT = Path(__file__).resolve().parents[1]


def check(lc) -> None:
    """Value checks of the `launch:` section (types are checked by the config loader)."""
    if lc.cluster not in CLUSTERS:
        raise UserError(f"launch cluster '{lc.cluster}' is not one of {', '.join(CLUSTERS)} "
                        "(config key launch.cluster or --cluster)")
    if lc.mode not in MODES:
        raise UserError(f"launch mode '{lc.mode}' is not one of {', '.join(MODES)} (config key launch.mode or --mode)")
    for key in ("nodes", "cpus_per_task", "time_min"):
        if getattr(lc, key) < 1:
            raise UserError(f"config key 'launch.{key}' must be >= 1, got {getattr(lc, key)}")
    if lc.gpus_per_node < 0 or (lc.tasks_per_node is not None and lc.tasks_per_node < 1):
        raise UserError("config keys 'launch.gpus_per_node' must be >= 0 and 'launch.tasks_per_node' >= 1")
    if lc.cluster != "slurm" and lc.nodes != 1:
        raise UserError(f"--cluster {lc.cluster} runs on this machine only: set launch.nodes=1 (got {lc.nodes})")
    extra_sbatch(lc)


def tasks_per_node(lc) -> int:
    return lc.tasks_per_node or max(1, lc.gpus_per_node)


def extra_sbatch(lc) -> dict:
    """`launch.sbatch` entries ("key=value" or "flag") as sbatch parameters."""
    out = {}
    for item in lc.sbatch:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UserError(f"launch.sbatch entry '{item}' must look like key=value or flag (e.g. exclusive)")
        out[key] = value if eq else True
    return out


def python_command(lc) -> str:
    return lc.python or shlex.quote(sys.executable)


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def srun_args(lc) -> list[str]:
    """Flags of the srun that starts the tasks. One task that exits badly ends the step at once: the
    others would otherwise wait in a collective until its timeout. With GPUs, every task sees all of
    its node's GPUs (CUDA IPC and NVLink between the ranks of a node need that) and drives the one of
    its local rank (trainer/engine/rendezvous.py; two ranks on one GPU are refused)."""
    args = ["--kill-on-bad-exit=1"]
    if lc.gpus_per_node:
        args.append("--gpu-bind=none")
    return args


def sbatch_parameters(lc, dependency: str | None = None) -> dict:
    """Keyword arguments of submitit's SlurmExecutor.update_parameters for one job."""
    extra = extra_sbatch(lc)
    if dependency:
        extra.setdefault("kill-on-invalid-dep", "yes")    # a failed phase cancels the rest of the chain
    if lc.mode == "requeue":
        extra.setdefault("requeue", True)                 # requeueable after preemption or node failure
    params = {
        "job_name": lc.job_name,
        "time": lc.time_min,
        "nodes": lc.nodes,
        "ntasks_per_node": tasks_per_node(lc),
        "cpus_per_task": lc.cpus_per_task,
        "gpus_per_node": lc.gpus_per_node or None,
        "mem": _mem(lc.mem_gb) if lc.mem_gb else None,
        "partition": lc.partition,
        "account": lc.account,
        "qos": lc.qos,
        "constraint": lc.constraint,
        "dependency": dependency,
        "signal_delay_s": lc.signal_delay_s,
        "setup": [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}", *lc.setup],
        "additional_parameters": extra or None,
        "srun_args": srun_args(lc),
    }
    return {k: v for k, v in params.items() if v is not None}


def render_sbatch(lc, folder: Path, dependency: str | None = None) -> str:
    """The sbatch script submitit would write for one job (for --dry-run; needs no SLURM)."""
    command = f"{python_command(lc)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    # submitit's own script writer, the one SlurmExecutor uses when it submits
    return submitit_slurm._make_sbatch_string(command=command, folder=folder, **sbatch_parameters(lc, dependency))


def make_executor(lc, folder: Path):
    """A submitit executor for lc.cluster; for slurm, parameters are set per job by the caller."""
    if lc.cluster == "slurm":
        try:
            return submitit.SlurmExecutor(folder, max_num_timeout=lc.max_requeues, python=python_command(lc))
        except RuntimeError as e:
            raise UserError(f"--cluster slurm needs SLURM's srun/sbatch on this machine ({e}); use --dry-run to "
                            "see the scripts, or --cluster local") from None
    if lc.cluster == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=lc.max_requeues, python=python_command(lc))
        ex.update_parameters(timeout_min=lc.time_min, tasks_per_node=tasks_per_node(lc),
                             gpus_per_node=lc.gpus_per_node, signal_delay_s=lc.signal_delay_s,
                             setup=sbatch_parameters(lc)["setup"])
        return ex
    return submitit.DebugExecutor(folder)
