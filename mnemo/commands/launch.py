"""`mnemo launch`: run a class-incremental run as SLURM jobs through submitit (launch/).

  mnemo launch --config C --run-dir R [--cluster slurm|local|debug] [--mode chain|requeue]
               [--nodes N --gpus-per-node G ...] [--dry-run] [key=value ...]
  mnemo launch status R [--json]
  mnemo launch resume R [cluster flags] [key=value ...]
  mnemo launch cancel R
Cluster options come from the config's `launch:` section; the flags override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from core.errors import UserError

ACTIONS = ("status", "resume", "cancel")
# flags that override the same-named LaunchConfig fields (launch: section of the config)
CLUSTER_FLAGS = ("cluster", "mode", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "time_min",
                 "partition", "account", "qos", "constraint")


def _with_flags(cfg, args):
    changes = {k: getattr(args, k) for k in CLUSTER_FLAGS if getattr(args, k) is not None}
    if args.sbatch:
        changes["sbatch"] = [*cfg.launch.sbatch, *args.sbatch]
    return dataclasses.replace(cfg, launch=dataclasses.replace(cfg.launch, **changes))


def _split(args):
    """(action, run_dir, overrides) from the positional words."""
    words = list(args.words)
    if words and words[0] in ACTIONS:
        if len(words) < 2:
            raise UserError(f"`mnemo launch {words[0]}` needs the run directory: mnemo launch {words[0]} RUN_DIR")
        return words[0], words[1], words[2:]
    bad = [w for w in words if "=" not in w]
    if bad:
        raise UserError(f"`mnemo launch`: '{bad[0]}' is neither an action ({', '.join(ACTIONS)}) nor a key=value "
                        "override")
    return "submit", args.run_dir, words


def _run(args) -> int:
    from launch import state as launch_state
    from launch import status as launch_status
    from launch import submit as launch_submit

    action, run_dir, overrides = _split(args)
    if action == "status":
        r = launch_status.report(run_dir)
        print(json.dumps(r, indent=1) if args.json else launch_status.format_report(r))
        return 0
    if action == "cancel":
        launch_submit.cancel(run_dir)
        return 0

    from trainer.config import config_from_dict, load_config
    from trainer.config.schema import apply_overrides

    if action == "resume":
        if args.config:
            raise UserError("`mnemo launch resume` takes the config stored in RUN/launch.json; give key=value "
                            "overrides instead of --config")
        st = launch_state.require(run_dir)
        cfg = config_from_dict(apply_overrides(st["config"], overrides))
    else:
        if not args.config or not run_dir:
            raise UserError("`mnemo launch` needs --config C and --run-dir R (or an action: status|resume|cancel R)")
        cfg = load_config(args.config, overrides)
    cfg = _with_flags(cfg, args)
    if args.dry_run:
        launch_submit.dry_run(cfg, run_dir)
        return 0
    st = launch_submit.submit(cfg, run_dir)
    failed = [j for j in st.get("jobs", []) if j.get("state") == "FAILED"]
    return 1 if failed and failed[-1].get("submission") == st.get("submissions") else 0


def register(sub) -> None:
    p = sub.add_parser("launch", help="submit a run as SLURM jobs (submitit); status | resume | cancel RUN_DIR",
                       description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe, e.g. configs/slurm/imagenet1k_b500_25_2x8.yaml")
    p.add_argument("--run-dir", help="run directory (on a file system every node sees)")
    p.add_argument("--cluster", choices=("slurm", "local", "debug"), help="submitit executor (default: launch.cluster)")
    p.add_argument("--mode", choices=("chain", "requeue"),
                   help="chain: one job per phase with afterok dependencies; requeue: one self-requeueing job")
    p.add_argument("--nodes", type=int)
    p.add_argument("--gpus-per-node", type=int)
    p.add_argument("--tasks-per-node", type=int, help="default: one per GPU")
    p.add_argument("--cpus-per-task", type=int)
    p.add_argument("--mem-gb", type=float, help="memory per node")
    p.add_argument("--time-min", type=int, help="time limit of each job in minutes")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--constraint")
    p.add_argument("--sbatch", action="append", metavar="KEY=VALUE", help="extra sbatch parameter (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch scripts instead of submitting")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.add_argument("words", nargs="*", metavar="[status|resume|cancel RUN_DIR] [key=value ...]")
    p.set_defaults(func=_run, overrides_into="words")
