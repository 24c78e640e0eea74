"""Run mnemo and FACIL side by side under a matched recipe, and tabulate them.

    python -m analysis.parity.run --facil ~/FACIL --protocol one_class --methods bic lwm --seeds 0 1 2
    python -m analysis.parity.run --protocol one_class --table          # the table of what has run
    python -m analysis.parity.run --facil ~/FACIL --protocol one_class --methods lwf --only mnemo facil

`facil_join` is FACIL with an epoch's last batch of one or two images joined to the batch before it
(analysis/parity/facil.py says why); `mnemo_even` is mnemo with its default batches of near-equal size
(train.last_batch=even): neither has such a batch. `facil_even` is FACIL cut into mnemo_even's batches.

Every run goes to OUT/<protocol>/<implementation>/<method>_s<seed>/ (metrics.json in mnemo's form); a finished run
is skipped, so the command resumes. Runs go JOBS at a time, each on one thread. The table gives per method the
mean ± standard deviation over seeds of each implementation's Ā, last-phase accuracy, base-class accuracy after
the last phase and F, the difference of the means with its standard error (the implementations' seeds are not
paired: they share no phase 0), and the mean wall time of a run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from analysis.parity.recipes import METHODS, PROTOCOLS, Recipe

ROOT = Path(__file__).resolve().parents[2]
# mnemo: the matched recipe, without gradient clipping as the peer; mnemo_clip1: the same with the glyph recipe's
# clipping at norm 1; mnemo_even: the matched recipe with mnemo's default batches (no short last batch);
# facil_join: FACIL with an epoch's last batch of one or two images joined to the one before; facil_even: FACIL
# with mnemo_even's batches (analysis/parity/facil.py)
IMPLEMENTATIONS = ("mnemo", "mnemo_clip1", "mnemo_even", "facil", "facil_join", "facil_even")
PEERS = {"facil": "short", "facil_join": "join", "facil_even": "even"}   # FACIL's runs: how each cuts an epoch
# (a, b, label): the differences the table gives, a − b
DIFFERENCES = (("mnemo", "facil", "mnemo − FACIL"), ("mnemo", "facil_join", "mnemo − FACIL, tail joined"),
               ("mnemo_clip1", "mnemo", "mnemo clip 1 − mnemo"),
               ("mnemo_even", "facil", "mnemo even − FACIL"),      # the pair where FACIL joins no batch (its BiC)
               ("mnemo_even", "facil_join", "mnemo even − FACIL, tail joined"),
               ("mnemo_even", "mnemo", "mnemo even − short batches"),
               ("mnemo_even", "facil_even", "mnemo even − FACIL even"),      # the same batches on both sides
               ("facil_even", "facil_join", "FACIL even − tail joined"))


def run_dir(out: Path, protocol: str, impl: str, method: str, seed: int) -> Path:
    return out / protocol / impl / f"{method}_s{seed}"


def command(recipe: Recipe, impl: str, method: str, seed: int, out: Path, facil: Path | None) -> list[str]:
    d = run_dir(out, recipe.protocol, impl, method, seed)
    if impl.startswith("mnemo"):
        return [sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir", str(d),
                *recipe.mnemo_overrides(method, seed, grad_clip=1.0 if impl == "mnemo_clip1" else 0.0,
                                        last_batch="even" if impl == "mnemo_even" else "short")]
    job = {**recipe.facil_job(method, seed), "batches": PEERS[impl]}
    return [sys.executable, "-m", "analysis.parity.facil", "--facil", str(facil), "--out", str(d),
            "--recipe", json.dumps(job)]


def jobs(recipe: Recipe, impls: list[str], methods: list[str], seeds: list[int], out: Path,
         facil: Path | None) -> list[tuple[list[str], Path]]:
    """(command, run directory) of every run asked for, seed by seed: a peer runs only the methods it has (not a
    mnemo-only setting)."""
    return [(command(recipe, impl, m, s, out, facil), run_dir(out, recipe.protocol, impl, m, s))
            for s in seeds for m in methods for impl in impls if not (impl in PEERS and METHODS[m].mnemo_only)]


def _done(d: Path) -> bool:
    try:
        return json.loads((d / "metrics.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def _run(cmd: list[str], d: Path) -> str:
    d.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f"{d.name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    return f"{d.relative_to(d.parents[2])}: " + ("done" if rc == 0 and _done(d) else f"FAILED (rc {rc}, {d}.log)")


def summary(d: Path) -> dict:
    m = json.loads((d / "metrics.json").read_text())
    last = m["phases"][-1]
    wall = m.get("wall_s") or sum(p.get("wall_s", 0.0) for p in m["phases"])
    return {"A": m["average_accuracy"], "last": last["accuracy"], "base": last["accuracy_base"],
            "F": m["forgetting"], "wall": wall}


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def _diff(a: list[float], b: list[float]) -> str:
    """Difference of the means (a - b) ± its standard error (Welch)."""
    if len(a) < 2 or len(b) < 2:
        return f"{statistics.mean(a) - statistics.mean(b):+.2f}"
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return f"{statistics.mean(a) - statistics.mean(b):+.2f} ± {se:.2f}"


def table(out: Path, protocol: str, methods: list[str]) -> str:
    rows = ["| method | implementation | seeds | Ā (%) | last phase (%) | base classes, last phase (%) | F (%) | "
            "minutes per run |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for method in methods:
        got = {}
        for impl in IMPLEMENTATIONS:
            # a mnemo-only variant is set beside the peer's runs of the method it varies
            runs = METHODS[method].peer_runs if impl in PEERS and METHODS[method].peer_runs else method
            dirs = sorted(p for p in (out / protocol / impl).glob(f"{runs}_s*")
                          if p.name[len(runs) + 2:].isdigit() and _done(p))   # icarl_s*: not icarl_softmax_s0
            got[impl] = [summary(d) for d in dirs]
            if got[impl]:
                s = got[impl]
                name = method if runs == method else f"{method} (the peer's {runs})"
                rows.append(f"| {name} | {impl} | {len(s)} | " + " | ".join(
                    _ms([r[k] for r in s]) for k in ("A", "last", "base", "F"))
                    + f" | {statistics.mean(r['wall'] for r in s) / 60:.1f} |")
        for one, other, name in DIFFERENCES:
            a, b = got[one], got[other]
            if a and b:
                rows.append(f"| {method} | {name} | | " + " | ".join(
                    _diff([r[k] for r in a], [r[k] for r in b]) for k in ("A", "last", "base", "F")) + " | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.parity.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    ap.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", choices=IMPLEMENTATIONS, default=None,
                    help="run these implementations only (default: mnemo_even and facil_join, the pair without a "
                         "one-image batch)")
    ap.add_argument("--facil", type=Path, default=None, help="a checkout of github.com/mmasana/FACIL")
    ap.add_argument("--out", type=Path, default=Path("runs/parity"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="print the table of the finished runs and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.out, args.protocol, args.methods))
        return 0
    impls = args.only or ["mnemo_even", "facil_join"]
    facil_ok = args.facil is not None and (args.facil / "src" / "main_incremental.py").is_file()
    if any(i in PEERS for i in impls) and not facil_ok:
        print("analysis.parity.run: --facil must name a checkout of github.com/mmasana/FACIL (with src/)",
              file=sys.stderr)
        return 2
    todo = [(c, d) for c, d in jobs(Recipe(args.protocol), impls, args.methods, args.seeds, args.out, args.facil)
            if not _done(d)]
    print(f"{len(todo)} runs to go, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda cd: _run(*cd), todo):
            print(line, flush=True)
    print(table(args.out, args.protocol, args.methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
