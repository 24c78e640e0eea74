"""Markdown tables: runs overview, the paper's Table 1 / Table 2 layouts, per-phase accuracy, time split.

Table 1 (paper): rows are methods ("LwF w/ herding"), columns are settings (data set, B, N), two
blocks: average incremental accuracy Ā and forgetting F. Table 2: one strategy, rows are exemplar
methods (random / herding / mnemonics, with or without adjusting old exemplars). Several runs in
one cell (seeds) show mean ± standard deviation and their count; values of a run that has not
finished all phases carry a * (they cover the finished phases only).
"""
from __future__ import annotations

import statistics

from reporting.run_dir import RunInfo


def fmt(v, digits: int = 2, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}{suffix}"
    return str(v)


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _cell(runs: list[RunInfo], key: str) -> str:
    vals = [r.summary(key) for r in runs if r.summary(key) is not None]
    if not vals:
        return "–"
    star = "*" if any(not r.complete for r in runs if r.summary(key) is not None) else ""
    if len(vals) == 1:
        return f"{vals[0]:.2f}{star}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f} ({len(vals)} runs){star}"


def pivot(runs: list[RunInfo], row_of, blocks: list[tuple[str, str]]) -> str:
    """Rows: row_of(run); columns: run.setting; one block of rows per (title, metrics key)."""
    settings = sorted({r.setting for r in runs})
    rows_names = sorted({row_of(r) for r in runs})
    out = []
    for title, key in blocks:
        if not any(r.summary(key) is not None for r in runs):
            continue
        for name in rows_names:
            cells = [_cell([r for r in runs if row_of(r) == name and r.setting == s], key) for s in settings]
            out.append([title, name, *cells])
    if not out:
        return "_No finished phases in these runs._"
    return md_table(["Metric", "Method", *settings], out, "ll" + "r" * len(settings))


TABLE1_BLOCKS = [("Ā (%) ↑", "average_accuracy"), ("F (%) ↓", "forgetting"),
                 ("Ā NME (%) ↑", "average_accuracy_nme"), ("F NME (%) ↓", "forgetting_nme")]


def table1(runs: list[RunInfo]) -> str:
    return pivot(runs, lambda r: r.method, TABLE1_BLOCKS)


def table2(runs: list[RunInfo]) -> list[tuple[str, str]]:
    """One (strategy name, table) per strategy that keeps exemplars."""
    out = []
    for strategy in sorted({r.strategy for r in runs if r.uses_exemplars}):
        group = [r for r in runs if r.strategy == strategy and r.uses_exemplars]
        out.append((group[0].method.split(" w/ ")[0], pivot(group, lambda r: r.exemplar_variant, TABLE1_BLOCKS[:2])))
    return out


def runs_overview(runs: list[RunInfo]) -> str:
    rows = []
    for r in runs:
        data, proto = r.section("data"), r.section("protocol")
        ex = r.section("exemplars")
        memory = ("–" if not r.uses_exemplars else
                  f"{ex.get('budget')} total" if ex.get("budget") else f"{ex.get('per_class', '?')}/class")
        done = f"{len(r.phases)}/{r.phases_total if r.phases_total is not None else '?'}"
        rows.append([f"`{r.name}`", r.method, r.dataset, f"{r.section('model').get('arch', '?')} @ "
                     f"{data.get('image_size', '?')} px", proto.get("base_classes", "?"), proto.get("phases", "?"),
                     memory, done] + [fmt(r.summary(k)) + ("" if r.complete or r.summary(k) is None else "*")
                                      for k in ("average_accuracy", "forgetting")])
    return md_table(["Run", "Method", "Data", "Model", "B", "N", "Memory", "Phases done", "Ā (%)", "F (%)"], rows,
                    "llllrrllrr")


def per_phase(run: RunInfo) -> str:
    if not run.phases:
        return "_No phase has finished._"
    nme = any(p.get("accuracy_nme") is not None for p in run.phases)
    header = ["Phase", "Classes seen", "CNN acc (%)"] + (["NME acc (%)"] if nme else []) + \
             ["Acc. on D₀ (%)", "Old classes (%)", "New classes (%)", "Exemplars", "Wall time (s)", "Sealed"]
    rows = []
    done = {p["phase"] for p in run.phases}
    for p in run.phases:
        rows.append([p["phase"], p.get("classes_seen", "–"), fmt(p.get("accuracy"))] +
                    ([fmt(p.get("accuracy_nme"))] if nme else []) +
                    [fmt(p.get("accuracy_base")), fmt(p.get("accuracy_old")), fmt(p.get("accuracy_new")),
                     p.get("exemplars_total", "–"), fmt(p.get("wall_s"), 1),
                     "yes" if p["phase"] in run.sealed else "**no**"])
    for ph in range(run.phases_total or 0):
        if ph not in done:
            rows.append([ph, "–", "not run"] + (["–"] if nme else []) + ["–"] * 5 + ["–"])
    return md_table(header, rows)


SPLIT_NAMES = {"train": "Model-level training", "exemplars": "Exemplars", "balanced_finetune": "Balanced fine-tune",
               "eval": "Evaluation", "engine_setup": "Engine set-up", "other": "Other"}


def time_split(run: RunInfo) -> str:
    prof = run.profile
    if not prof or not prof.get("phases"):
        return "_No throughput figures (no events.jsonl or no finished phase)._"
    keys = []
    for p in prof["phases"]:
        keys += [k for k in p["split_s"] if k not in keys]
    keys = [k for k in SPLIT_NAMES if k in keys] + [k for k in keys if k not in SPLIT_NAMES]
    stages = []
    for p in prof["phases"]:
        stages += [s for s in p["stages"] if s not in stages]
    header = ["Phase", "Wall (s)"] + [f"{SPLIT_NAMES.get(k, k)} (s)" for k in keys] + \
             [f"{SPLIT_NAMES.get(s, s)} img/s" for s in stages] + ["Data wait (%)", "Epoch ends (s)",
                                                                   "Fwd / bwd / opt (ms/step)", "Peak mem (MB)"]
    world = prof.get("world") or 1
    if world > 1:
        header.append("Training img/s per rank")
    rows = []
    for p in prof["phases"]:
        tr = p["stages"].get("train") or next(iter(p["stages"].values()), {})
        split = (f"{fmt(tr.get('forward_ms'), 0)} / {fmt(tr.get('backward_ms'), 0)} / {fmt(tr.get('optimizer_ms'), 0)}"
                 if "forward_ms" in tr else "–")
        rows.append([p["phase"], fmt(p["wall_s"], 1)] + [fmt(p["split_s"].get(k), 1) for k in keys] +
                    [fmt((p["stages"].get(s) or {}).get("img_s"), 1) for s in stages] +
                    [fmt(100 * tr["data_wait_share"], 1) if "data_wait_share" in tr else "–",
                     fmt(sum((st.get("epoch_end_s") or 0.0) for st in p["stages"].values()), 2)
                     if any("epoch_end_s" in st for st in p["stages"].values()) else "–", split,
                     fmt(tr.get("peak_mem_mb"), 0)])
        if world > 1:
            rows[-1].append(", ".join(fmt(v, 0) for v in tr.get("img_s_per_rank", [])) or "–")
    t = prof["totals"]
    rows.append(["**all**", fmt(t["wall_s"], 1)] + [fmt(t["split_s"].get(k), 1) for k in keys] +
                [fmt((t["stages"].get(s) or {}).get("img_s"), 1) for s in stages] + [""] * (4 + (world > 1)))
    return md_table(header, rows)
