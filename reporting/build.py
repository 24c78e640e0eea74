"""`build_report(runs, out)`: every figure and table of a set of run directories, and report.md.

report.md embeds the PNGs (relative links, so the directory can be moved or zipped as a whole):
runs overview and notes (partial runs, missing or damaged phases), phase-wise accuracy curves
(paper Figure 4), Ā/F tables in the layouts of the paper's Tables 1 and 2, per-phase accuracy, t-SNE
of exemplars among the data (Figures 1/5), exemplar image grids, and throughput / time split charts
with their tables.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from reporting import tables
from reporting.run_dir import RunInfo, load_runs


@dataclass
class ReportOptions:
    tsne: bool = True
    tsne_phases: list[int] | None = None     # default: first, middle and last phase of each run
    tsne_classes: int = 3                    # base classes shown (later phases add one class each)
    tsne_per_class: int = 100                # real images per class in the t-SNE
    grids: bool = True
    grid_phase: int | None = None            # default: the last sealed phase of each run
    grid_classes: int = 4
    grid_per_class: int = 8
    device: str = "cpu"
    extra_notes: list[str] = field(default_factory=list)


def default_tsne_phases(run: RunInfo) -> list[int]:
    total = run.phases_total or (max(run.sealed) + 1 if run.sealed else 0)
    if total <= 0:
        return []
    return sorted({0, (total - 1) // 2, total - 1})


def build_report(paths: list[str | Path], out: str | Path, opts: ReportOptions | None = None) -> Path:
    opts = opts or ReportOptions()
    if not paths:
        raise UserError("give at least one run directory")
    runs = load_runs(paths)
    from reporting import plots  # matplotlib: only once the runs are known to be runs
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    figure_notes: list[str] = list(opts.extra_notes)
    md = [f"# mnemo report: {len(runs)} run{'s' if len(runs) > 1 else ''}", "",
          f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `mnemo report` from "
          + ", ".join(f"`{r.path}`" for r in runs) + ".", "", "## Runs", "", tables.runs_overview(runs), ""]
    run_notes = [(r, n) for r in runs for n in r.notes]
    notes_at = len(md)

    md += ["## Phase-wise accuracy (paper Figure 4)", ""]
    p = plots.accuracy_curves(runs, out / "accuracy_curves.png")
    if p:
        md += [f"![Phase-wise accuracy]({p.name})", "",
               "Top-1 accuracy of Θ_i on the test data of all classes seen so far (A_i), after each phase. "
               "Legend: Ā, the average over phases.", ""]
    else:
        md += ["_No finished phase in any run._", ""]

    md += ["## Average accuracy Ā and forgetting F (paper Table 1 layout)", "",
           "Ā = mean of A_i over the phases; F = A_0^Z − A_N^Z, the accuracy on D_0^test of Θ_0 minus that of Θ_N. "
           "\\* partial run (finished phases only).", "", tables.table1(runs), ""]
    t2 = tables.table2(runs)
    if t2:
        md += ["## Exemplar methods (paper Table 2 layout)", ""]
        for strategy, table in t2:
            md += [f"**{strategy}**", "", table, ""]

    md += ["## Accuracy per phase", ""]
    for r in runs:
        md += [f"### `{r.name}`: {r.method}", "", tables.per_phase(r), ""]

    if opts.tsne:
        md += ["## Exemplars among the data (t-SNE, paper Figures 1 and 5)", ""]
        phases = {r.name: (opts.tsne_phases if opts.tsne_phases is not None else default_tsne_phases(r))
                  for r in runs if r.uses_exemplars}
        p = _tsne(runs, phases, out, opts, figure_notes)
        if p:
            md += [f"![t-SNE of exemplars]({p.name})", "",
                   f"Features of the sealed model of each phase, embedded with t-SNE (axes have no units). Light "
                   f"dots: up to {opts.tsne_per_class} real training images per class; dark outlined dots: the "
                   "exemplars in memory after that phase; grey crosses: the other seen classes (mean feature of "
                   "their exemplars). The paper's claim to check: mnemonics exemplars lie near class boundaries, "
                   "herding exemplars near class centres.", ""]
        else:
            md += ["_No t-SNE: no run with exemplars has a sealed phase (see notes)._", ""]

    if opts.grids:
        md += ["## Exemplar images", ""]
        p, chosen = _grids(runs, out, opts, figure_notes)
        if p:
            md += [f"![Exemplar images]({p.name})", "",
                   f"The first {opts.grid_per_class} stored exemplars of {opts.grid_classes} base classes "
                   f"(rows) at phase {', '.join(f'{v} ({k})' for k, v in chosen.items())}, in memory order; "
                   "mnemonics exemplars are optimised pixels, so they may differ visibly from real images.", ""]
        else:
            md += ["_No exemplar images: no run with exemplars has a sealed phase._", ""]

    md += ["## Throughput and time split", ""]
    p1 = plots.time_split(runs, out / "time_split.png")
    p2 = plots.throughput(runs, out / "throughput.png")
    if p1:
        md += [f"![Time split per phase]({p1.name})", ""]
    if p2:
        md += [f"![Throughput]({p2.name})", ""]
    if p1 or p2:
        md += ["Wall time per phase split into model-level training, exemplar work (selection, mnemonics "
               "optimisation, adjustment), balanced fine-tune, evaluation, building the DeepSpeed engines and the "
               "rest (reading shards, teacher copies); img/s counts images of "
               "all ranks. Step split: data wait and forward/backward/optimizer per step (host clock on CPU, "
               "CUDA events on GPU); memory is the CUDA peak per stage, or the process peak RSS on CPU.", ""]
    for r in runs:
        device = r.profile.get("device") if r.profile else None
        md += [f"### `{r.name}`" + (f" ({device}, {r.profile.get('world')} rank(s))" if device else ""), "",
               tables.time_split(r), ""]

    notes = [f"- `{r.name}`: {n}" for r, n in run_notes] + [f"- {n}" for n in figure_notes]
    if notes:
        md[notes_at:notes_at] = ["### Notes", "", *notes, ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def _tsne(runs, phases, out: Path, opts: ReportOptions, notes: list[str]):
    from reporting.exemplar_views import tsne_figure

    return tsne_figure(runs, phases, out / "tsne.png", opts.tsne_classes, opts.tsne_per_class, opts.device, notes)


def _grids(runs, out: Path, opts: ReportOptions, notes: list[str]):
    from reporting.exemplar_views import grid_figure

    return grid_figure(runs, opts.grid_phase, out / "exemplars.png", opts.grid_classes, opts.grid_per_class, notes)
