"""`mnemo train`: run or resume a class-incremental run."""
from __future__ import annotations


def _run(args) -> int:
    from trainer.config import load_config
    from trainer.main import run

    cfg = load_config(args.config, args.overrides)
    summary = run(cfg, args.run_dir)
    return 0 if summary["status"] == "complete" else 1


def register(sub) -> None:
    t = sub.add_parser("train", help="run (or resume) a class-incremental run")
    t.add_argument("--config", required=True, help="YAML recipe, e.g. configs/glyphs.yaml")
    t.add_argument("--run-dir", required=True, help="run directory (created; resumed if it exists)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=5")
    t.set_defaults(func=_run)
