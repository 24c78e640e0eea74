"""A validation shard set carved out of a training split, for choosing hyperparameters without
touching the test set (e.g. LwM's β and γ, which its paper leaves open).

`make_holdout(src, out, per_class)` writes a new shard set with the same classes: its "test" split is
`per_class` images of every class drawn (seeded) from src's *train* split, its "train" split the rest
of src's train split. src's test split is not read. Runs on it are ordinary `mnemo train` runs with
`data.shards=OUT`; their "test" accuracies are validation accuracies.
"""
from __future__ import annotations

import random
import tarfile
from pathlib import Path

from core.errors import UserError
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.writer import ShardSetWriter


def _class_samples(manifest, class_id: int) -> list[tuple[str, bytes]]:
    """(key, encoded image) of one class's train samples, sorted by key."""
    ext = "." + manifest.encoding
    out = []
    for shard in manifest.shards("train", [class_id]):
        with tarfile.open(manifest.path(shard)) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(ext):
                    out.append((member.name[: -len(ext)], tar.extractfile(member).read()))
    return sorted(out)


def make_holdout(src: str | Path, out: str | Path, per_class: int, seed: int = 1993, progress=print):
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise UserError("holdout: --out must differ from --src")
    if per_class < 1:
        raise UserError(f"holdout: --per-class must be >= 1, got {per_class}")
    manifest = load_manifest(src)
    writer = ShardSetWriter(out, f"{manifest.dataset}-holdout{per_class}", manifest.classes, manifest.image_size,
                            manifest.encoding, created_by=f"mnemo holdout --src {src} --per-class {per_class}")
    rng = random.Random(seed)
    for c in range(manifest.num_classes):
        samples = _class_samples(manifest, c)
        if len(samples) <= per_class:
            raise UserError(f"holdout: class {c} has {len(samples)} train images, not more than --per-class "
                            f"{per_class}; lower --per-class")
        val = set(rng.sample(range(len(samples)), per_class))
        writer.write_class("train", c, [s for i, s in enumerate(samples) if i not in val])
        writer.write_class("test", c, [s for i, s in enumerate(samples) if i in val])
    m = writer.finish()
    progress(f"[holdout] wrote {out}: {m.num_classes} classes, {per_class} validation images per class "
             f"held out of {src}'s train split")
    return m
