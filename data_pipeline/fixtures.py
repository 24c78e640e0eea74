"""Small real image trees for tests and smoke runs (no downloads).

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
