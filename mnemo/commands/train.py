"""`mnemo train`: run or resume a class-incremental run (optionally as N local worker processes)."""
from __future__ import annotations

import os


def _run(args) -> int:
    from trainer.config import load_config

    cfg = load_config(args.config, args.overrides)          # fail fast, before starting workers
    if args.nproc_per_node > 1 and "RANK" not in os.environ:
        from launch.local import launch

        argv = ["train", "--config", args.config, "--run-dir", args.run_dir, *args.overrides]
        return launch(argv, args.nproc_per_node)
    from trainer.run.driver import run

    summary = run(cfg, args.run_dir)
    return 0 if summary["status"] == "complete" else 1


def register(sub) -> None:
    t = sub.add_parser("train", help="run (or resume) a class-incremental run")
    t.add_argument("--config", required=True, help="YAML recipe, e.g. configs/glyphs.yaml")
    t.add_argument("--run-dir", required=True, help="run directory (created; resumed if it exists)")
    t.add_argument("--nproc-per-node", type=int, default=1, help="local data-parallel worker processes (gloo on CPU)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=5")
    t.set_defaults(func=_run, overrides_into="overrides")
