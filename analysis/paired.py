"""Paired differences over seeds: each configuration against a reference, seed by seed.

    python -m analysis.paired runs/codec_select raw          # run dirs named <configuration>_s<seed>
    python -m analysis.paired runs/codec_select raw --out paired.md

Run dirs are grouped by name: `<configuration>_s<seed>`. For every configuration and every seed it shares with the
reference, the difference configuration − reference of Ā (CNN and NME), F and the exemplars held a class after the
last phase; the table gives their mean ± standard error over those seeds (sample standard deviation / √n), the
figure to compare methods by when each seed's runs share phase 0 (`train.base_from`), and each configuration's
mean runtime against the reference's, phase 0's model training left out of both (one run of a seed trains it, the
others reuse it). Incomplete runs are left out and counted.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

NAME = re.compile(r"^(?P<config>.+)_s(?P<seed>\d+)$")
FIGURES = (("A", "average_accuracy"), ("A_nme", "average_accuracy_nme"), ("F", "forgetting"))


def figures(run: Path) -> dict | None:
    """Ā, Ā NME, F, exemplars held a class after the last phase and minutes of a complete run (without phase 0's
    model training, which the runs of a seed share through `train.base_from`); None otherwise."""
    try:
        m = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if m.get("status") != "complete":
        return None
    last = m["phases"][-1]
    held = last.get("held_mean", last.get("exemplars_per_class"))
    shared = m["phases"][0].get("timings", {}).get("train_s", 0.0)     # phase 0's training: one run's, reused
    return {**{k: m.get(key) for k, key in FIGURES}, "held": held,
            "minutes": (sum(p.get("wall_s", 0.0) for p in m["phases"]) - shared) / 60}


def collect(root: Path) -> tuple[dict[str, dict[int, dict]], int]:
    """({configuration: {seed: figures}}, incomplete runs) of the run dirs under `root`."""
    runs: dict[str, dict[int, dict]] = {}
    incomplete = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        match = NAME.match(d.name)
        if not match or not (d / "metrics.json").is_file():
            continue
        got = figures(d)
        if got is None:
            incomplete += 1
            continue
        runs.setdefault(match["config"], {})[int(match["seed"])] = got
    return runs, incomplete


def mean_se(values: list[float]) -> str:
    if not values or any(v is None for v in values):
        return "–"
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:+.2f}"
    return f"{mean:+.2f} ± {statistics.stdev(values) / math.sqrt(len(values)):.2f}"


def table(runs: dict[str, dict[int, dict]], reference: str) -> str:
    if reference not in runs:
        raise SystemExit(f"analysis.paired: no complete run of the reference '{reference}' (names <config>_s<seed>)")
    ref = runs[reference]
    lines = [f"| configuration − {reference} | seeds | Ā (%) | Ā NME (%) | F (%) | held a class | minutes (vs "
             f"{reference}; phase 0's training left out) |", "|---|---|---:|---:|---:|---:|---:|"]
    for config, by_seed in runs.items():
        if config == reference:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        if not seeds:
            continue

        def diffs(key, seeds=seeds, by_seed=by_seed):
            pairs = [(by_seed[s][key], ref[s][key]) for s in seeds]
            return [a - b if a is not None and b is not None else None for a, b in pairs]
        minutes = statistics.mean(by_seed[s]["minutes"] for s in seeds)
        ref_minutes = statistics.mean(ref[s]["minutes"] for s in seeds)
        held = statistics.mean(by_seed[s]["held"] for s in seeds) if all(by_seed[s]["held"] is not None
                                                                         for s in seeds) else None
        lines.append(f"| {config} | {','.join(map(str, seeds))} | {mean_se(diffs('A'))} | {mean_se(diffs('A_nme'))} "
                     f"| {mean_se(diffs('F'))} | {'–' if held is None else f'{held:.1f}'} | "
                     f"{minutes:.1f} ({ref_minutes:.1f}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.paired", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a directory of run dirs named <configuration>_s<seed>")
    ap.add_argument("reference", help="the configuration every other one is compared with")
    ap.add_argument("--out", type=Path, help="write the Markdown here too")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        raise SystemExit(f"analysis.paired: {args.root} is not a directory")
    runs, incomplete = collect(args.root)
    text = table(runs, args.reference)
    if incomplete:
        text += f"\n\n{incomplete} incomplete run(s) left out."
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
