"""`mnemo shards imagefolder`: any one-folder-per-class image tree (train and val/test) to shards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from data_pipeline.shards.image_codec import (
    encode,
    open_rgb,
    resize_short_side,
    resize_square,
)
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.writer import ShardSetWriter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def list_class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UserError(f"{root} has no class sub-folders (expected one folder per class)")
    return folders


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _samples(files: list[Path], size: int | None, short_side: int | None, encoding: str, prefix: str,
             skip_bad: bool, skipped: list):
    for i, path in enumerate(files):
        try:
            img = open_rgb(str(path), name=str(path))
        except UserError as e:
            if not skip_bad:
                raise UserError(f"{e} (pass --skip-bad to skip unreadable images)") from None
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        if size:
            img = resize_square(img, size)
        elif short_side:
            img = resize_short_side(img, short_side)
        yield f"{prefix}{i:07d}", encode(img, encoding)


@dataclass(frozen=True)
class FolderOptions:
    """How `convert_imagefolder` stores the images."""
    size: int | None = 32                # square side: short side resized, then centre-cropped (None: see short_side)
    short_side: int | None = None        # resize the short side only, keeping the aspect (with size None)
    encoding: str = "png"                # png | jpg
    dataset: str = "imagefolder"         # the manifest's data set name
    skip_bad: bool = False               # skip unreadable images (listed in the manifest) instead of stopping


def convert_imagefolder(train: Path, val: Path, out: Path, options: FolderOptions = FolderOptions(),
                        progress=print) -> Manifest:
    size, short_side, encoding, skip_bad = options.size, options.short_side, options.encoding, options.skip_bad
    dataset = options.dataset
    train, val = Path(train), Path(val)
    train_folders = list_class_folders(train)
    names = [p.name for p in train_folders]
    val_names = [p.name for p in list_class_folders(val)]
    unknown = sorted(set(val_names) - set(names))
    if unknown:
        raise UserError(f"{val} has class folders that {train} lacks: {', '.join(unknown[:5])}")
    classes = [{"id": i, "name": n, "key": n} for i, n in enumerate(names)]
    writer = ShardSetWriter(out, dataset, classes, size, encoding, created_by="mnemo shards imagefolder")
    skipped: list = []
    for split, root in (("train", train), ("test", val)):
        for cid, name in enumerate(names):
            folder = root / name
            files = list_images(folder) if folder.is_dir() else []
            if split == "train" and not files:
                raise UserError(f"class folder {folder} has no images")
            writer.write_class(split, cid, _samples(files, size, short_side, encoding, f"{name}_", skip_bad, skipped))
        progress(f"[shards] {split}: {len(names)} classes written")
    return writer.finish(skipped)
