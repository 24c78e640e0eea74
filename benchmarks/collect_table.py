"""Turn run directories into a Markdown table like the mnemonics paper's Table 1.

    python benchmarks/collect_table.py runs/table1            # every run dir under runs/table1
    python benchmarks/collect_table.py RUN1 RUN2 --out table.md

One row per run dir (a directory holding metrics.json and config.yaml): method, exemplar selection,
weight transfer, protocol (B, N), Ā and F (CNN; %), NME Ā where the run had exemplars, top-5 Ā, and
the runtime, the sum of the phases' wall_s from metrics.json. Incomplete runs are marked.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


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
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    strat = cfg.get("strategy", {}).get("name", "?")
    ex = cfg.get("exemplars", {})
    memory = ex.get("budget") if ex.get("budget") is not None else ex.get("per_class")
    free = strat in ("finetune", "joint") or memory == 0
    selection = "none" if free else ex.get("selection", "?") + ("+adj" if ex.get("adjust_old") else "")
    proto = cfg.get("protocol", {})
    wall = sum(p.get("wall_s", 0.0) for p in m.get("phases", []))
    return {
        "run": run.name, "method": strat, "exemplars": selection,
        "wt": "yes" if cfg.get("train", {}).get("weight_transfer") else "no",
        "B": proto.get("base_classes"), "N": proto.get("phases"),
        "A": m.get("average_accuracy"), "F": m.get("forgetting"),
        "A_nme": m.get("average_accuracy_nme"), "A_top5": m.get("average_accuracy_top5"),
        "minutes": wall / 60, "done": f"{m.get('phases_done')}/{m.get('phases_total')}",
        "complete": m.get("status") == "complete",
    }


def table(rows: list[dict]) -> str:
    head = ("| run | method | exemplars | weight transfer | B | N | Ā (%) | F (%) | Ā NME (%) | Ā top-5 (%) "
            "| runtime (min) | phases |")
    lines = [head, "|" + "|".join(["---"] * 12) + "|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {r['exemplars']} | {r['wt']} | {r['B']} | {r['N']} | "
                     f"{_fmt(r['A'])} | {_fmt(r['F'])} | {_fmt(r['A_nme'])} | {_fmt(r['A_top5'])} | "
                     f"{r['minutes']:.1f} | {r['done']}{'' if r['complete'] else ' (incomplete)'} |")
    total = sum(r["minutes"] for r in rows)
    lines.append("")
    lines.append(f"Total runtime of these runs: {total:.1f} min (sum of the phases' wall_s).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run dirs, or directories holding run dirs")
    ap.add_argument("--out", help="write the Markdown here instead of stdout")
    args = ap.parse_args(argv)
    rows = [row(r) for r in find_runs(args.paths)]
    if not rows:
        raise SystemExit("collect_table: no run directories with metrics.json found")
    text = table(rows) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
