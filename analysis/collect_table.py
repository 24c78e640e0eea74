"""Turn run directories into a Markdown table like the mnemonics paper's Table 1.

    python -m analysis.collect_table runs/table1            # every run dir under runs/table1
    python -m analysis.collect_table RUN1 RUN2 --out table.md
    python -m analysis.collect_table runs/table2 --seeds     # Table-2 style: mean ± std over seeds

One row per run dir (a directory holding metrics.json and config.yaml): method, exemplar selection (and how
the memory stored them, where not raw), weight transfer, protocol (B, N), Ā and F (CNN; %), NME Ā where the run had exemplars, top-5 Ā, and
the runtime, the sum of the phases' wall_s from metrics.json. Incomplete runs are marked. Runs
started from another run's phase 0 (`train.base_from`) are marked: their runtime leaves out the
shared phase-0 training. With --seeds, runs that differ only in `seed` become one row with the mean
± sample standard deviation of Ā and F and the number of seeds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

from trainer.config.migrate import migrate


def find_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.json").is_file():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(d.parent for d in p.glob("*/metrics.json"))
        else:
            raise SystemExit(f"collect_table: {p} is neither a run dir nor a directory of run dirs")
    return runs


def _fmt(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def row(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    cfg = migrate(yaml.safe_load((run / "config.yaml").read_text()) or {}) if (run / "config.yaml").is_file() else {}
    strat = cfg.get("strategy", {}).get("name", "?")
    ex = cfg.get("exemplars", {})
    memory = ex.get("budget") if ex.get("budget") is not None else ex.get("per_class")
    free = strat in ("finetune", "joint") or memory == 0
    selection = "none" if free else ex.get("selection", "?") + ("+adj" if ex.get("adjust_old") else "")
    descent = selection.split("+")[0]
    if descent in ("optimised", "mnemonics"):       # the exemplar-level knobs a search varies
        mn = ex.get(descent) or {}                  # a key an older config lacks: its value then (the paper's)
        inner, matching = mn.get("unrolled") or {}, mn.get("matching") or {}
        objective = mn.get("objective", "unrolled")
        if objective == "unrolled":
            knobs = [f"β1={mn.get('lr', 0.01):g}", f"α2={inner.get('inner_lr', 0.01):g}",
                     f"T={inner.get('inner_steps', 50)}"]
        else:
            knobs = [objective if matching.get("match", "features") == "features" else "gradient matching",
                     f"β1={mn.get('lr', 0.01):g}"]
            if objective == "matching":
                knobs.append(f"embedders={matching.get('embedders', 'current')}")
        if mn.get("val_batches", 1) != 1:
            knobs.append(f"val_batches={mn['val_batches']}")
        bn = (inner.get("inner_bn", "batch"), inner.get("val_bn", "batch"))
        if bn != ("batch", "batch"):
            knobs.append(f"BN inner/val={bn[0]}/{bn[1]}")
        for key, default, where in (("meta_loss", "all", inner), ("init", "random", mn)):
            if where.get(key, default) != default:
                knobs.append(f"{key}={where[key]}")
        selection += f" ({', '.join(knobs)})"
    codec = ex.get("codec", "raw")                  # how the memory stored its exemplars (raw before the key)
    if not free and codec != "raw":
        low = ex.get("lowres") or {}
        selection += f" as {codec}" + (f" 1/{low.get('factor', 2)} {low.get('encoding', 'png')}"
                                       if codec == "lowres" else "")
    proto = cfg.get("protocol", {})
    wall = sum(p.get("wall_s", 0.0) for p in m.get("phases", []))
    return {
        "run": run.name, "method": strat, "exemplars": selection,
        "wt": "yes" if cfg.get("train", {}).get("weight_transfer") else "no",
        "B": proto.get("base_classes"), "N": proto.get("phases"),
        "A": m.get("average_accuracy"), "F": m.get("forgetting"),
        "A_nme": m.get("average_accuracy_nme"), "A_top5": m.get("average_accuracy_top5"),
        "minutes": wall / 60, "done": f"{m.get('phases_done')}/{m.get('phases_total')}",
        "complete": m.get("status") == "complete", "seed": cfg.get("seed"),
        "shared_base": bool(cfg.get("train", {}).get("base_from")),
    }


def _mean_std(values: list[float]) -> str:
    if any(v is None for v in values):
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def seed_table(rows: list[dict]) -> str:
    """One row per configuration (method, exemplars, weight transfer, B, N): mean ± std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["exemplars"], r["wt"], r["B"], r["N"]), []).append(r)
    lines = ["| method | exemplars | weight transfer | B | N | Ā (%) | F (%) | Ā NME (%) | seeds | runtime per run (min) |",
             "|" + "|".join(["---"] * 10) + "|"]
    for (method, ex, wt, b, n), rs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"] or 0))
        incomplete = sum(not r["complete"] for r in rs)
        lines.append(f"| {method} | {ex} | {wt} | {b} | {n} | {_mean_std([r['A'] for r in rs])} | "
                     f"{_mean_std([r['F'] for r in rs])} | {_mean_std([r['A_nme'] for r in rs])} | {seeds}"
                     f"{f' ({incomplete} incomplete)' if incomplete else ''} | "
                     f"{statistics.mean(r['minutes'] for r in rs):.1f}"
                     f"{'*' if any(r['shared_base'] for r in rs) else ''} |")
    lines += ["", "\\* some runs reuse another run's phase 0 (`train.base_from`); their runtime leaves out "
              "phase-0 training."]
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = ("| run | method | exemplars | weight transfer | B | N | Ā (%) | F (%) | Ā NME (%) | Ā top-5 (%) "
            "| runtime (min) | phases |")
    lines = [head, "|" + "|".join(["---"] * 12) + "|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {r['exemplars']} | {r['wt']} | {r['B']} | {r['N']} | "
                     f"{_fmt(r['A'])} | {_fmt(r['F'])} | {_fmt(r['A_nme'])} | {_fmt(r['A_top5'])} | "
                     f"{r['minutes']:.1f}{'*' if r['shared_base'] else ''} | "
                     f"{r['done']}{'' if r['complete'] else ' (incomplete)'} |")
    total = sum(r["minutes"] for r in rows)
    lines.append("")
    lines.append(f"Total runtime of these runs: {total:.1f} min (sum of the phases' wall_s).")
    if any(r["shared_base"] for r in rows):
        lines.append("\\* reuses another run's phase 0 (`train.base_from`): phase-0 training is not in its runtime.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run dirs, or directories holding run dirs")
    ap.add_argument("--out", help="write the Markdown here instead of stdout")
    ap.add_argument("--seeds", action="store_true", help="one row per configuration: mean ± std over seeds")
    args = ap.parse_args(argv)
    rows = [row(r) for r in find_runs(args.paths)]
    if not rows:
        raise SystemExit("collect_table: no run directories with metrics.json found")
    text = (seed_table(rows) if args.seeds else table(rows)) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
