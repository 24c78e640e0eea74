"""Where a process of a multi-process run meets the others, and which device it drives.

Functions of the environment (no CUDA, no network; `first_host` may ask `scontrol`), so every
launcher's case is checked on CPU: torchrun / `mnemo train --nproc-per-node` (RANK, LOCAL_RANK, MASTER_ADDR/PORT set),
submitit (sets them too) and plain `srun mnemo train` (only SLURM_* set: the address is the first host
of SLURM_JOB_NODELIST, the port a function of the job id, so every task of the step agrees without
talking).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import Mapping

from core.errors import UserError

# Linux hands out ephemeral ports from 32768-60999: a port derived from the job id stays below, in
# 20000-29999 (two jobs on one node collide only if their ids agree modulo 10000).
PORT_BASE, PORT_SPAN = 20000, 10000
CUDA_REQUIREMENT = ("torch's CUDA build needs an NVIDIA driver that supports it (the default CUDA 13.0 "
                    "build needs driver >= 580; for an older driver set up a CUDA 12 build with "
                    "MNEMO_CUDA=cu128 bash scripts/setup.sh, docs/cluster.md); nvidia-smi shows the driver")


def _first_of_nodelist(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[03-05,07],cpu1" -> "gpu03") without scontrol."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise UserError(f"SLURM_JOB_NODELIST '{nodelist}' is not a node list")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def first_host(nodelist: str) -> str:
    """The first host of `nodelist`, as `scontrol show hostnames` expands it (or parsed, without scontrol)."""
    if shutil.which("scontrol"):
        try:
            r = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                               timeout=30)
            hosts = r.stdout.split()
            if r.returncode == 0 and hosts:
                return hosts[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return _first_of_nodelist(nodelist)


def job_port(job_id: str) -> int:
    digits = re.sub(r"\D", "", job_id.split("_")[0]) or "0"      # array jobs: "1234_5"
    return PORT_BASE + int(digits) % PORT_SPAN


def master_from_slurm(env: Mapping[str, str]) -> dict[str, str]:
    """MASTER_ADDR / MASTER_PORT for a multi-task SLURM step that does not set them; {} when set or
    when this is no SLURM job."""
    out = {}
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not env.get("MASTER_ADDR") and nodelist:
        out["MASTER_ADDR"] = first_host(nodelist)
    if not env.get("MASTER_PORT") and env.get("SLURM_JOB_ID"):
        out["MASTER_PORT"] = str(job_port(env["SLURM_JOB_ID"]))
    return out


def local_world(env: Mapping[str, str]) -> int | None:
    """Processes of this run on this node, where a launcher says so."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    per_node = env.get("SLURM_TASKS_PER_NODE", "")           # "8(x2)" or "4,3"
    m = re.match(r"(\d+)", per_node)
    return int(m.group(1)) if m else None


def gpus_given(env: Mapping[str, str]) -> str | None:
    """Why this process should have a GPU (the variable that says so), or None."""
    gpus = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if gpus.isdigit() and int(gpus) > 0:
        return f"SLURM_GPUS_ON_NODE={gpus}"
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible not in ("-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible}"
    return None


def cuda_index(local_rank: int, local_size: int | None, visible: int) -> int:
    """The visible device this local rank drives: its own when each task sees one GPU (SLURM binding one
    GPU per task), else the local rank's (every task sees the node's GPUs). Two ranks on one device
    are refused."""
    if visible < 1:
        raise UserError("no CUDA device is visible to this process")
    if visible == 1:
        return 0            # bound to one GPU per task (or one task per node); shared GPUs are caught later
    if local_rank >= visible:
        raise UserError(f"local rank {local_rank} has no GPU of its own: this task sees {visible} GPU(s) for "
                        f"{local_size or local_rank + 1} local tasks (ask SLURM for one GPU per task, e.g. "
                        "--gpus-per-node equal to --ntasks-per-node)")
    return local_rank
