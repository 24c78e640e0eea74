"""Exemplars seen two ways: t-SNE among the real data (paper Figures 1 and 5) and image grids.

t-SNE: for a sealed phase p, the sealed model Θ_p embeds (i) up to `per_class` real training images
of a few classes, (ii) those classes' exemplars from the sealed memory, and (iii) one point per other
seen class (the mean feature of its exemplars, the paper's grey crosses); sklearn's TSNE maps the
L2-normalised features to 2-D, one embedding per (run, phase). The classes follow the paper's
Figure 5: `k` random base classes (seed fixed, so runs with one protocol show the same classes),
plus one class from each later phase up to p, at most 10 in all.

Grids: the stored exemplar pixels of a few classes at one phase, in memory order (for herding the
first column is the image closest to the class mean), one panel per run, so that herding and
mnemonics exemplars of the same classes sit side by side.
"""
from __future__ import annotations

import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from core.errors import UserError  # noqa: E402
from reporting.plots import save  # noqa: E402
from reporting.run_dir import RunInfo, load_sealed  # noqa: E402
from trainer.run.storage import sealed_phases  # noqa: E402

MAX_CLASSES = 10
MAX_OTHERS = 60


def phase_sizes(run: RunInfo, plan_len: int) -> tuple[int, int]:
    """(B, classes per incremental phase)."""
    p = run.section("protocol")
    base, n = int(p.get("base_classes", plan_len)), int(p.get("phases", 0))
    return base, (plan_len - base) // n if n else 0


def pick_labels(run: RunInfo, plan_len: int, phase: int, k: int, seed: int = 0) -> list[int]:
    base, step = phase_sizes(run, plan_len)
    labels = sorted(random.Random(seed).sample(range(base), min(k, base)))
    later = list(range(1, phase + 1))
    room = max(0, MAX_CLASSES - len(labels))
    if len(later) > room:
        later = [later[round(i * (len(later) - 1) / max(1, room - 1))] for i in range(room)] if room else []
    return labels + [base + (j - 1) * step for j in dict.fromkeys(later)]


class DataCache:
    """Decoded training images per (shard dir, preset, size, class id), shared by runs on the same data."""

    def __init__(self):
        self.images: dict[tuple, torch.Tensor] = {}
        self.manifests: dict[str, object] = {}

    def manifest(self, shards: str):
        from data_pipeline.shards.manifest import load_manifest

        if shards not in self.manifests:
            self.manifests[shards] = load_manifest(shards, verify=False)
        return self.manifests[shards]

    def class_name(self, run: RunInfo, class_id: int) -> str:
        try:
            m = self.manifest(run.section("data").get("shards", ""))
            name = next(c["name"] for c in m.classes if int(c["id"]) == class_id)
            return name if len(name) <= 14 else name[:13] + "…"
        except (UserError, OSError, StopIteration, KeyError):
            return f"class {class_id}"

    def images_of(self, run: RunInfo, class_ids: list[int], per_class: int) -> dict[int, torch.Tensor]:
        """uint8 (n, 3, S, S) per class id, at most `per_class` (a fixed random subset), centre-cropped to S."""
        from data_pipeline.shards.reader import read_classes

        d = run.section("data")
        shards, preset, size = d.get("shards", ""), d.get("preset", "glyphs"), int(d.get("image_size", 32))
        want = [c for c in class_ids if (shards, preset, size, c) not in self.images]
        if want:
            got = read_classes(self.manifest(shards), "train", want, preset, size)
            for c in want:
                x = got.images[got.class_ids == c]
                if x.shape[-1] > size:                            # imagenet preset keeps train images larger
                    off = (x.shape[-1] - size) // 2
                    x = x[..., off: off + size, off: off + size]
                g = torch.Generator().manual_seed(c)
                self.images[(shards, preset, size, c)] = x[torch.randperm(len(x), generator=g)]
        return {c: self.images[(shards, preset, size, c)][:per_class] for c in class_ids}


def tsne_panel(run: RunInfo, phase: int, k: int, per_class: int, cache: DataCache, device: str) -> dict:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from exemplars.features import extract_features

    model, bank, state = load_sealed(run, phase)
    model.to(device)
    plan = list(state["plan"])
    labels = [l for l in pick_labels(run, len(plan), phase, k) if l in bank and len(bank[l])]
    if not labels:
        raise UserError("the memory holds no exemplars of the chosen classes")
    data = cache.images_of(run, [plan[l] for l in labels], per_class)
    others = [l for l in sorted(bank) if l not in labels][:MAX_OTHERS]
    chunks, owners = [], []
    for l in labels:
        chunks += [data[plan[l]], bank[l].float()]
        owners += [("data", l)] * len(data[plan[l]]) + [("ex", l)] * len(bank[l])
    feats = [extract_features(model, c, torch.device(device), 256) for c in chunks if len(c)]
    for l in others:
        f = extract_features(model, bank[l].float(), torch.device(device), 256).mean(0, keepdim=True)
        feats.append(torch.nn.functional.normalize(f, dim=1))
        owners.append(("other", l))
    x = torch.cat(feats).numpy()
    if len(x) < 5:
        raise UserError(f"only {len(x)} points to embed")
    perplexity = float(min(30, max(2, (len(x) - 1) // 4)))
    # One OpenMP thread: a few thousand points take seconds, while a busy machine makes sklearn's threaded
    # Barnes-Hut many times slower (measured: 300 points, 2 loaded cores, 28 s threaded vs 4 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(x)
    return {"labels": labels, "names": {l: cache.class_name(run, plan[l]) for l in labels}, "xy": xy,
            "owners": owners, "seen": state["num_classes"], "phase": phase}


def tsne_figure(runs: list[RunInfo], phases: dict[str, list[int]], path: Path, k: int = 3, per_class: int = 100,
                device: str = "cpu", notes: list[str] | None = None) -> Path | None:
    """Rows: runs; columns: the phases asked for each run (a missing phase is an empty panel)."""
    notes = notes if notes is not None else []
    cache = DataCache()
    panels: dict[tuple[str, int], dict | str] = {}
    phases = dict(phases)
    failed: dict[tuple[str, str], list[int]] = {}
    for r in runs:
        if phases.get(r.name) and not r.sealed:
            notes.append(f"`{r.name}`: no sealed phase, so no t-SNE")
            phases.pop(r.name)
        for ph in phases.get(r.name, []):
            if ph not in r.sealed:
                panels[(r.name, ph)] = f"phase {ph} not sealed"
                continue
            try:
                panels[(r.name, ph)] = tsne_panel(r, ph, k, per_class, cache, device)
            except (UserError, OSError) as e:
                failed.setdefault((r.name, str(e).splitlines()[0]), []).append(ph)
                panels[(r.name, ph)] = "no t-SNE (see notes)"
    for (name, why), phs in failed.items():
        notes.append(f"`{name}`: no t-SNE for phase{'s' if len(phs) > 1 else ''} {', '.join(map(str, phs))} ({why})")
    if not any(isinstance(v, dict) for v in panels.values()):
        return None
    ncols = max(len(phases.get(r.name, [])) for r in runs)
    shown = [r for r in runs if phases.get(r.name)]
    fig, axes = plt.subplots(len(shown), ncols, figsize=(3.7 * ncols, 3.6 * len(shown) + 0.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    names: dict[int, str] = {}
    for i, r in enumerate(shown):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ph_list = phases.get(r.name, [])
            if j >= len(ph_list):
                ax.axis("off")
                continue
            panel = panels[(r.name, ph_list[j])]
            if isinstance(panel, str):
                ax.text(0.5, 0.5, panel, ha="center", va="center", transform=ax.transAxes, color="0.4")
                ax.set_title(f"phase {ph_list[j]}", fontsize=10)
                continue
            xy, owners = panel["xy"], panel["owners"]
            for kind, size, alpha, edge in (("data", 9, 0.28, "none"), ("ex", 34, 1.0, "black")):
                for li, l in enumerate(panel["labels"]):
                    idx = [n for n, o in enumerate(owners) if o == (kind, l)]
                    if idx:
                        names[l] = panel["names"][l]
                        ax.scatter(xy[idx, 0], xy[idx, 1], s=size, color=cmap(l % 10), alpha=alpha,
                                   edgecolors=edge, linewidths=0.6, zorder=3 if kind == "ex" else 2)
            idx = [n for n, o in enumerate(owners) if o[0] == "other"]
            if idx:
                ax.scatter(xy[idx, 0], xy[idx, 1], marker="x", s=22, color="0.55", linewidths=1.0, zorder=1)
            ax.set_title(f"phase {panel['phase']}: {panel['seen']} classes seen", fontsize=10)
        axes[i, 0].set_ylabel(r.label, fontsize=9)
    from matplotlib.lines import Line2D

    classes = [Line2D([], [], ls="", marker="o", ms=7, color=cmap(l % 10), label=f"{names[l]} (label {l})")
               for l in sorted(names)]
    kinds = [Line2D([], [], ls="", marker="o", ms=4, color="0.3", alpha=0.35, label="real training images"),
             Line2D([], [], ls="", marker="o", ms=7, color="0.3", markeredgecolor="black", label="exemplars"),
             Line2D([], [], ls="", marker="x", ms=6, color="0.55", label="other seen classes (exemplar mean)")]
    fig.suptitle("t-SNE of sealed-model features: exemplars (dark, outlined) among real data (light)", fontsize=11)
    fig.tight_layout()
    per_row = max(2, 2 * ncols)
    fig.legend(handles=classes, loc="upper center", ncol=min(per_row, len(classes)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0), title="classes (colour)", title_fontsize=8)
    rows = -(-len(classes) // per_row)
    fig.legend(handles=kinds, loc="upper center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -(0.35 + 0.22 * rows) / fig.get_figheight()))
    return save(fig, path)


def _memory(run: RunInfo, phase: int) -> dict[int, torch.Tensor]:
    sd = sealed_phases.load_file(run.path, phase, "memory.pt")
    return {int(k): v for k, v in sd.get("bank", {}).items()}


def _plan(run: RunInfo, phase: int) -> list[int]:
    st = sealed_phases.load_file(run.path, phase, "state.pt")
    return list(st["plan"])


def grid_figure(runs: list[RunInfo], phase: int | None, path: Path, classes: int = 4, per_class: int = 8,
                notes: list[str] | None = None) -> tuple[Path | None, dict[str, int]]:
    """One panel per run: rows = classes, columns = exemplars in memory order. Returns (path, phase per run)."""
    notes = notes if notes is not None else []
    chosen: dict[str, int] = {}
    for r in runs:
        if not r.uses_exemplars or not r.sealed:
            continue
        ph = phase if phase is not None else max(r.sealed)
        if ph not in r.sealed:
            notes.append(f"`{r.name}`: phase {ph} is not sealed; no exemplar images")
            continue
        chosen[r.name] = ph
    shown = [r for r in runs if r.name in chosen]
    if not shown:
        return None, chosen
    cache = DataCache()
    panels = []
    for r in shown:
        bank, plan = _memory(r, chosen[r.name]), _plan(r, chosen[r.name])
        labels = [l for l in pick_labels(r, len(plan), 0, classes) if l in bank]
        rows = [bank[l][:per_class].float().clamp(0, 1) for l in labels]
        panels.append((r, labels, rows, plan))
    per_class = max((len(row) for _, _, rows, _ in panels for row in rows), default=1)
    fig_w = max(3.0, 0.55 * per_class + 1.6) * len(panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_w, 0.62 * classes + 1.3), squeeze=False)
    for ax, (r, labels, rows, plan) in zip(axes[0], panels):
        if not rows:
            ax.axis("off")
            continue
        size = rows[0].shape[-1]
        pad = max(1, size // 16)
        canvas = torch.full((3, len(rows) * (size + pad) + pad, per_class * (size + pad) + pad), 0.8)
        for i, row in enumerate(rows):
            for j, img in enumerate(row):
                y, x = pad + i * (size + pad), pad + j * (size + pad)
                canvas[:, y: y + size, x: x + size] = img
        ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_yticks([pad + i * (size + pad) + size / 2 for i in range(len(rows))],
                      [cache.class_name(r, plan[l]) for l in labels], fontsize=8)
        ax.set_xticks([pad + j * (size + pad) + size / 2 for j in range(per_class)],
                      [str(j + 1) for j in range(per_class)], fontsize=7)
        ax.tick_params(length=0)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_xlabel("exemplar (memory order)", fontsize=8)
        ax.set_title(f"{r.label}\nphase {chosen[r.name]}", fontsize=9)
    fig.tight_layout()
    return save(fig, path), chosen
