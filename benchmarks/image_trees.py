"""Small real image trees for profiling, smoke runs and tests (no downloads): the inputs of the converters.

`write_imagenet_tree` writes an ImageNet-shaped tree (synset folders of real JPEGs at varied sizes,
validation in any of the standard forms) for the ImageNet converter and the DALI loaders.

`write_digits_tree` writes scikit-learn's bundled handwritten digits (8x8, 10 classes, real data)
as a one-folder-per-class PNG/JPEG tree, upscaled, in varied sizes and colour modes, so the
imagefolder converter and the whole training path can be exercised in seconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_tree(root: str | Path, per_class_train: int = 40, per_class_test: int = 10,
                      classes: int = 10, size: int = 32, mixed_formats: bool = True) -> tuple[Path, Path]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    images = (digits.images / 16.0 * 255).astype(np.uint8)
    out = (root / "train", root / "val")
    for c in range(classes):
        idx = np.flatnonzero(digits.target == c)
        for split, sel in ((out[0], idx[:per_class_train]), (out[1], idx[per_class_train:per_class_train + per_class_test])):
            folder = split / f"digit_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(sel):
                side = size + (k % 3) * 8 if mixed_formats else size       # varied sizes
                img = Image.fromarray(255 - images[i]).resize((side, side), Image.BILINEAR)
                if mixed_formats and k % 2:
                    img.convert("RGB").save(folder / f"{k:04d}.jpg", quality=95)
                else:
                    img.save(folder / f"{k:04d}.png")                       # greyscale PNG
    return out


# ---------------------------------------------------------------------------------------------------
# ImageNet-shaped trees: train/<synset>/*.JPEG, val in one of the standard forms

VAL_FORMS = ("kaggle", "devkit", "tf", "caffe", "folders")


def synset_ids(n: int) -> list[str]:
    """n synset-shaped ids (n########), ascending."""
    return [f"n{1440764 + 9973 * i:08d}" for i in range(n)]


def _sample_images() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_image

    return [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]


def _crop(sources, rng: np.random.Generator, w: int, h: int) -> Image.Image:
    src = sources[int(rng.integers(len(sources)))]
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.25, 1.0)
    ch, cw = max(8, int(sh * scale)), max(8, int(sw * scale))
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    return Image.fromarray(src[y: y + ch, x: x + cw]).resize((w, h), Image.BILINEAR)


def _write_meta_mat(path: Path, synsets: list[str], ids: list[int]) -> None:
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children"]
    rows = [(np.int32(i), s, f"thing {s}, other name", "a test synset", np.int32(0)) for s, i in zip(synsets, ids)]
    rows.append((np.int32(len(synsets) + 1), "n00000001", "entity", "a non-leaf synset", np.int32(3)))
    arr = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for k, r in enumerate(rows):
        arr[k, 0] = r
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"synsets": arr})


def write_imagenet_tree(root: str | Path, classes: int = 1000, per_class: tuple[int, int] = (2, 1),
                        val_form: str = "kaggle", sides: tuple[int, int] = (40, 160), quirks: bool = True,
                        quality: int = 85, seed: int = 0) -> dict:
    """An ImageNet-shaped tree of real JPEGs (crops of scikit-learn's bundled sample photos), `per_class` =
    (train, val) images per class, each side drawn from `sides` (least, most): `root/train/<synset>/<synset>_<k>.JPEG`
    and a validation set in `val_form`:
    kaggle (flat val/ + LOC_val_solution.csv + LOC_synset_mapping.txt), devkit (flat +
    ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt + meta.mat), tf (flat +
    imagenet_2012_validation_synset_labels.txt), caffe (flat + val.txt `<file> <index>`) or folders
    (val/<synset>/). With `quirks`, like the real set, one train image is a PNG and one a CMYK JPEG
    under a .JPEG name, and one is greyscale. Returns {"train", "val", "synsets", "ground_truth"}."""
    if val_form not in VAL_FORMS:
        raise ValueError(f"val_form must be one of {VAL_FORMS}")
    root = Path(root)
    (train_per_class, val_per_class), (min_side, max_side) = per_class, sides
    rng = np.random.default_rng(seed)
    sources = _sample_images()
    synsets = synset_ids(classes)
    train, val = root / "train", root / "val"

    def size():
        return int(rng.integers(min_side, max_side + 1)), int(rng.integers(min_side, max_side + 1))

    for c, s in enumerate(synsets):
        folder = train / s
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(train_per_class):
            img = _crop(sources, rng, *size())
            path = folder / f"{s}_{k}.JPEG"
            if quirks and k == 0 and c == 0:
                img.save(path, format="PNG")
            elif quirks and k == 0 and c == 1:
                img.convert("CMYK").save(path, format="JPEG", quality=quality)
            elif quirks and k == 0 and c == 2:
                img.convert("L").save(path, format="JPEG", quality=quality)
            else:
                img.save(path, format="JPEG", quality=quality)
    labels = np.repeat(np.arange(classes), val_per_class)
    labels = labels[rng.permutation(len(labels))]          # val files are not in class order
    names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(labels))]
    for name, c in zip(names, labels):
        folder = val / synsets[c] if val_form == "folders" else val
        folder.mkdir(parents=True, exist_ok=True)
        _crop(sources, rng, *size()).save(folder / name, format="JPEG", quality=quality)
    val.mkdir(parents=True, exist_ok=True)
    gt = None
    if val_form == "kaggle":
        gt = root / "LOC_val_solution.csv"
        gt.write_text("ImageId,PredictionString\n" + "".join(
            f"{Path(n).stem},{synsets[c]} 10 20 100 120 {synsets[c]} 5 5 50 50 \n" for n, c in zip(names, labels)))
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} class {s}, another name\n" for s in synsets))
    elif val_form == "devkit":
        ids = (np.random.RandomState(seed).permutation(classes) + 1).tolist()   # ILSVRC2012_ID order is not sorted
        data = root / "ILSVRC2012_devkit_t12" / "data"
        _write_meta_mat(data / "meta.mat", synsets, ids)
        gt = data / "ILSVRC2012_validation_ground_truth.txt"
        gt.write_text("".join(f"{ids[c]}\n" for c in labels))
    elif val_form == "tf":
        gt = root / "imagenet_2012_validation_synset_labels.txt"
        gt.write_text("".join(f"{synsets[c]}\n" for c in labels))
    elif val_form == "caffe":
        gt = root / "val.txt"
        gt.write_text("".join(f"{n} {c}\n" for n, c in zip(names, labels)))
    return {"train": train, "val": val, "synsets": synsets, "ground_truth": gt,
            "val_labels": {Path(n).stem: synsets[c] for n, c in zip(names, labels)}}
