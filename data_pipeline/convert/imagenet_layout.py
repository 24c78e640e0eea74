"""The standard ImageNet (ILSVRC2012) folder layouts: train synset folders, the forms of the
validation set, synset names, and the ImageNet-Subset class choice.

Validation, in the order they are tried:
* `folders`: val/ holds one folder per synset (e.g. after the usual valprep.sh);
* flat: val/ holds the 50,000 images and a ground-truth file says their synsets. The file is given
  with `--val-labels`, or found in val/ or up to four folders above it (or their
  ILSVRC2012_devkit_t12/data/) under a usual name:
  - `LOC_val_solution.csv` (Kaggle): `ImageId,PredictionString`, the synset is the first word;
  - `ILSVRC2012_validation_ground_truth.txt` (devkit): one ILSVRC2012_ID (1..1000) per line for
    ILSVRC2012_val_00000001, 2, ...; the IDs map to synsets through the devkit's `data/meta.mat`
    (found beside it, in ILSVRC2012_devkit_t12/, or given with `--devkit`);
  - `imagenet_2012_validation_synset_labels.txt` (TensorFlow): one synset per line, same order;
  - `val.txt` / `val_labels.txt` (Caffe and others): `<file> <synset>` or `<file> <index>`, where the
    index counts the sorted train synsets from 0.
Synset names come from `LOC_synset_mapping.txt`, `synset_words.txt` or `words.txt`
(`<synset> <name, ...>` lines) or the devkit's meta.mat; without any, the synset id is the name.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
GROUND_TRUTH_NAMES = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt",
                      "imagenet_2012_validation_synset_labels.txt", "val.txt", "val_labels.txt",
                      "ILSVRC2012_val_labels.txt")
NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "words.txt")
WNID = re.compile(r"^n\d{8}$")
SUBSET_SEED = 1993


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def train_synsets(train: Path) -> list[str]:
    if not train.is_dir():
        raise UserError(f"ImageNet train folder not found: {train}")
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not names:
        raise UserError(f"{train} has no synset folders (expected train/n01440764/*.JPEG, ...)")
    return names


def subset_synsets(synsets: list[str], size: int, seed: int = SUBSET_SEED) -> list[str]:
    """ImageNet-Subset: the first `size` classes of RandomState(seed).permutation over the sorted
    synsets (as protocol.make_plan orders classes, and as LUCIR/PODNet chose ImageNet-100), sorted."""
    if not 0 < size <= len(synsets):
        raise UserError(f"--subset {size} must be between 1 and the {len(synsets)} train synsets")
    order = np.random.RandomState(seed).permutation(len(synsets))
    return sorted(synsets[i] for i in order[:size])


def _search(dirs: list[Path], names) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _near(*paths: Path) -> list[Path]:
    """The folders themselves and up to four levels above (Kaggle: ILSVRC/Data/CLS-LOC/val)."""
    out: list[Path] = []
    for p in paths:
        for d in [p, *list(p.resolve().parents)[:4]]:
            if d not in out:
                out.append(d)
    return out


def _meta_mat(path: Path) -> list[tuple[int, str, str]]:
    """(ILSVRC2012_ID, wnid, words) of the 1000 leaf synsets of a devkit meta.mat."""
    try:
        from scipy.io import loadmat

        meta = loadmat(str(path), squeeze_me=True)["synsets"]
        rows = [(int(r[0]), str(r[1]), str(r[2])) for r in meta if int(r[4]) == 0]
    except Exception as e:
        raise UserError(f"cannot read the devkit's {path}: {e}") from None
    return rows


def synset_names(synsets: list[str], train: Path, val: Path, names_file: str | None = None,
                 devkit: str | None = None) -> tuple[dict[str, str], str]:
    """{wnid: readable name} and where it came from."""
    path = Path(names_file) if names_file else _search(_near(train, val), NAME_FILES)
    if names_file and not path.is_file():
        raise UserError(f"--synset-names file not found: {path}")
    names: dict[str, str] = {}
    if path is not None:
        for line in path.read_text(errors="replace").splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and parts[0] in synsets:
                names[parts[0]] = parts[1].split(",")[0].strip()
        source = str(path)
    else:
        mat = _find_meta(train, val, devkit)
        if mat is not None:
            names = {w: words.split(",")[0].strip() for _, w, words in _meta_mat(mat)}
            source = str(mat)
        else:
            source = "none found: names are the synset ids"
    return {s: names.get(s, s) for s in synsets}, source


def _find_meta(train: Path, val: Path, devkit: str | None) -> Path | None:
    if devkit:
        d = Path(devkit)
        for p in (d, d / "meta.mat", d / "data" / "meta.mat"):
            if p.is_file():
                return p
        raise UserError(f"--devkit {devkit}: no meta.mat there (expected ILSVRC2012_devkit_t12/data/meta.mat)")
    dirs = _near(train, val)
    return _search([x for d in dirs for x in (d, d / "data", d / "ILSVRC2012_devkit_t12" / "data")], ["meta.mat"])


@dataclass
class ValLayout:
    form: str                                  # what was found, for messages and the manifest
    files: dict[str, list[Path]]               # wnid -> images (only known synsets)
    unlabelled: int = 0


def _by_stem(images: list[Path]) -> dict[str, Path]:
    return {p.stem: p for p in images}


def _assign(pairs, images: list[Path], synsets: list[str], gt: Path, form: str) -> ValLayout:
    """pairs: (image stem or name, wnid). Every image needs a label; every label a known synset."""
    stems = _by_stem(images)
    known = set(synsets)
    files: dict[str, list[Path]] = {s: [] for s in synsets}
    labelled = set()
    for name, wnid in pairs:
        stem = Path(name).stem
        if stem not in stems:
            continue                      # labels of images not present (e.g. a partial copy)
        if wnid not in known:
            raise UserError(f"{gt}: {name} is labelled {wnid}, which is not a train synset folder")
        files[wnid].append(stems[stem])
        labelled.add(stem)
    missing = sorted(set(stems) - labelled)
    if missing:
        raise UserError(f"{gt} ({form}) has no label for {len(missing)} val image(s), e.g. {stems[missing[0]]}")
    return ValLayout(f"flat val folder + {form} ({gt})", {k: sorted(v) for k, v in files.items()})


def _read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def val_layout(val: Path, synsets: list[str], train: Path, val_labels: str | None = None,
               devkit: str | None = None) -> ValLayout:
    """Find which standard form the validation set has, and the images of each synset."""
    if not val.is_dir():
        raise UserError(f"ImageNet val folder not found: {val}")
    sub = sorted(p for p in val.iterdir() if p.is_dir())
    images = list_images(val)
    if sub and not images and val_labels is None:
        unknown = [p.name for p in sub if p.name not in synsets]
        if unknown:
            raise UserError(f"{val} has folders that are not train synsets: {', '.join(unknown[:5])}")
        return ValLayout("val synset folders", {s: list_images(val / s) if (val / s).is_dir() else [] for s in synsets})
    if not images:
        raise UserError(f"{val} has neither synset folders nor images")
    gt = Path(val_labels) if val_labels else _search(
        [x for d in _near(val) for x in (d, d / "ILSVRC2012_devkit_t12" / "data")], GROUND_TRUTH_NAMES)
    if gt is None or not gt.is_file():
        raise UserError(f"{val} is a flat folder of {len(images)} images but no ground-truth file was found "
                        f"{'at ' + str(gt) if gt else 'beside it'}: give --val-labels FILE "
                        f"(accepted: {', '.join(GROUND_TRUTH_NAMES)}; or synset folders)")
    if gt.suffix == ".csv":
        with open(gt, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
            raise UserError(f"{gt}: expected the Kaggle header 'ImageId,PredictionString'")
        pairs = [(r[0], r[1].split()[0]) for r in rows[1:] if len(r) >= 2 and r[1].split()]
        return _assign(pairs, images, synsets, gt, "Kaggle LOC_val_solution.csv")
    lines = _read_lines(gt)
    widths = {len(t) for t in lines}
    if widths == {1}:
        toks = [t[0] for t in lines]
        names = [f"ILSVRC2012_val_{i + 1:08d}" for i in range(len(toks))]
        if all(WNID.match(t) for t in toks):
            return _assign(zip(names, toks), images, synsets, gt, "one synset per line (TensorFlow)")
        if all(t.isdigit() for t in toks):
            mat = _find_meta(gt.parent, val, devkit)
            if mat is None:
                raise UserError(f"{gt} holds ILSVRC2012_IDs, which need the devkit's data/meta.mat to map to "
                                "synsets: give --devkit ILSVRC2012_devkit_t12")
            id_to_wnid = {i: w for i, w, _ in _meta_mat(mat)}
            try:
                wnids = [id_to_wnid[int(t)] for t in toks]
            except KeyError as e:
                raise UserError(f"{gt}: ILSVRC2012_ID {e} is not in {mat}") from None
            return _assign(zip(names, wnids), images, synsets, gt, f"devkit ground truth + {mat.name}")
    if widths == {2}:
        if all(WNID.match(t[1]) or t[1] in synsets for t in lines):
            return _assign(((a, b) for a, b in lines), images, synsets, gt, "'<file> <synset>' lines")
        if all(t[1].isdigit() for t in lines):
            idx = [int(t[1]) for t in lines]
            if max(idx) >= len(synsets):
                raise UserError(f"{gt}: class index {max(idx)} but train has only {len(synsets)} synsets")
            return _assign(((a, synsets[i]) for (a, _), i in zip(lines, idx)), images, synsets, gt,
                           "'<file> <index of sorted synsets>' lines (Caffe)")
    raise UserError(f"{gt}: not a ground-truth form mnemo knows (Kaggle CSV, devkit IDs, one synset per line, "
                    "'<file> <synset>' or '<file> <index>')")
