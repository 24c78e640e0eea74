"""Figures from metrics and profiles: phase-wise accuracy (paper Figure 4), time split, throughput.

Every function takes RunInfo objects, writes one PNG and returns its path (None when there is
nothing to draw). Matplotlib runs headless (Agg).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reporting.run_dir import RunInfo  # noqa: E402

DPI = 130
SPLIT_COLORS = {"train": "#4c72b0", "exemplars": "#dd8452", "balanced_finetune": "#55a868", "eval": "#c44e52",
                "engine_setup": "#8172b3", "other": "#b0b0b0"}
SPLIT_LABELS = {"train": "model-level training", "exemplars": "exemplars (select / optimise / adjust)",
                "balanced_finetune": "balanced fine-tune", "eval": "evaluation",
                "engine_setup": "engine set-up (DeepSpeed)", "other": "other (reading shards, teacher copy, ...)"}
PART_COLORS = {"data": "#b0b0b0", "forward": "#4c72b0", "backward": "#dd8452", "optimizer": "#55a868",
               "other": "#8172b3"}
STAGE_NAMES = {"train": "training", "balanced_finetune": "balanced fine-tune"}


def run_colors(runs: list[RunInfo]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10")
    return {r.name: cmap(i % 10) for i, r in enumerate(runs)}


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def accuracy_curves(runs: list[RunInfo], path: Path) -> Path | None:
    """Top-1 accuracy on all seen classes after each phase vs. classes seen; NME in a second panel."""
    runs = [r for r in runs if r.phases]
    if not runs:
        return None
    nme = [r for r in runs if any(p.get("accuracy_nme") is not None for p in r.phases)]
    panels = [("CNN classifier", "accuracy", "average_accuracy", runs)]
    if nme:
        panels.append(("Nearest mean of exemplars (NME)", "accuracy_nme", "average_accuracy_nme", nme))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False, sharey=True)
    colors = run_colors(runs)
    for ax, (title, key, avg_key, group) in zip(axes[0], panels):
        for r in group:
            pts = [(p["classes_seen"], p[key]) for p in r.phases if p.get(key) is not None]
            if not pts:
                continue
            avg = r.summary(avg_key)
            tag = "" if avg is None else f"  Ā = {avg:.1f}%" + ("" if r.complete else "*")
            ax.plot(*zip(*pts), marker="o", ms=5, lw=1.8, color=colors[r.name], label=f"{r.label}{tag}")
        ax.set_title(title)
        ax.set_xlabel("Number of classes seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0][0].set_ylabel("Top-1 accuracy on all seen classes (%)")
    lo = min(p.get(k) for r in runs for p in r.phases for k in ("accuracy", "accuracy_nme") if p.get(k) is not None)
    axes[0][0].set_ylim(max(0, lo - 10), 100)
    xs = sorted({p["classes_seen"] for r in runs for p in r.phases})
    for ax in axes[0]:
        ax.set_xticks(xs if len(xs) <= 12 else xs[:: max(1, len(xs) // 10)])
    if any(not r.complete for r in runs):
        fig.text(0.01, -0.02, "* partial run: Ā over the finished phases only", fontsize=8)
    return save(fig, path)


def _bars(ax, rows: list[tuple[str, dict]], keys: list[str], colors: dict, labels: dict):
    y = list(range(len(rows)))
    left = [0.0] * len(rows)
    for k in keys:
        vals = [d.get(k, 0.0) or 0.0 for _, d in rows]
        ax.barh(y, vals, left=left, color=colors.get(k, "#999999"), label=labels.get(k, k), height=0.65)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(y, [n for n, _ in rows])
    ax.invert_yaxis()
    return left


def time_split(runs: list[RunInfo], path: Path) -> Path | None:
    """Per run, one horizontal bar per phase: wall seconds split into training, exemplars, fine-tune, eval."""
    runs = [r for r in runs if r.profile.get("phases")]
    if not runs:
        return None
    keys: list[str] = []
    for r in runs:
        for p in r.profile["phases"]:
            keys += [k for k in p["split_s"] if k not in keys]
    keys = [k for k in SPLIT_COLORS if k in keys] + [k for k in keys if k not in SPLIT_COLORS]
    heights = [0.9 + 0.32 * len(r.profile["phases"]) for r in runs]
    fig, axes = plt.subplots(len(runs), 1, figsize=(8.5, sum(heights) + 0.9), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": heights})
    for ax, r in zip(axes[:, 0], runs):
        rows = [(f"phase {p['phase']}", p["split_s"]) for p in r.profile["phases"]]
        totals = _bars(ax, rows, keys, SPLIT_COLORS, SPLIT_LABELS)
        for y, t in enumerate(totals):
            ax.text(t, y, f" {t:.0f} s" if t >= 10 else f" {t:.1f} s", va="center", fontsize=8)
        ax.set_title(r.label, fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    xmax = max(sum(p["split_s"].values()) for r in runs for p in r.profile["phases"])
    for ax in axes[:, 0]:
        ax.set_xlim(0, xmax * 1.15)
    axes[-1, 0].set_xlabel("Wall time per phase (s)")
    fig.suptitle("Where the time goes, per phase")
    fig.tight_layout()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(3, len(keys)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return save(fig, path)


def throughput(runs: list[RunInfo], path: Path) -> Path | None:
    """Left: training img/s per phase (solid: training, dashed: balanced fine-tune). Right: mean time per
    step split into data wait, forward, backward, optimizer step and the rest, per run and stage."""
    runs = [r for r in runs if r.profile.get("phases")]
    if not runs:
        return None
    colors = run_colors(runs)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.15]})
    styles = {"train": ("-", "o"), "balanced_finetune": ("--", "s")}
    for r in runs:
        for stage, (ls, marker) in styles.items():
            pts = [(p["phase"], p["stages"][stage]["img_s"]) for p in r.profile["phases"]
                   if stage in p["stages"] and p["stages"][stage].get("img_s")]
            if pts:
                ax.plot(*zip(*pts), ls=ls, marker=marker, ms=5, color=colors[r.name],
                        label=f"{r.name}: {STAGE_NAMES[stage]}")
    ax.set_xlabel("Phase")
    ax.set_ylabel("Training throughput (images / s, all ranks)")
    ax.set_title("Images per second by phase")
    phases = sorted({p["phase"] for r in runs for p in r.profile["phases"]})
    ax.set_xticks(phases if len(phases) <= 12 else phases[:: max(1, len(phases) // 10)])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rows = []
    for r in runs:
        for stage, f in r.profile["totals"]["stages"].items():
            if "forward_ms" in f:
                rows.append((f"{r.name}: {STAGE_NAMES.get(stage, stage)}", {k: f[f"{k}_ms"] for k in PART_COLORS}))
    if rows:
        totals = _bars(bx, rows, list(PART_COLORS), PART_COLORS,
                       {"data": "data wait", "forward": "forward (loss)", "backward": "backward",
                        "optimizer": "optimizer step", "other": "bookkeeping"})
        for y, t in enumerate(totals):
            bx.text(t, y, f" {t:.0f} ms", va="center", fontsize=8)
        bx.set_xlim(0, max(totals) * 1.18)
        bx.set_xlabel("Mean time per step (ms), over all phases")
        bx.set_title("Step time split")
        bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=5, frameon=False)
        bx.grid(axis="x", alpha=0.3)
        bx.tick_params(axis="y", labelsize=8)
    else:
        bx.axis("off")
        bx.text(0.5, 0.5, "no per-step timings in events.jsonl", ha="center", va="center")
    return save(fig, path)
