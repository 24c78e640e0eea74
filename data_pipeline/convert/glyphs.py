"""`mnemo shards glyphs`: the built-in default data set (62 characters from real fonts) as shards."""
from __future__ import annotations

import re
from pathlib import Path

from core.errors import UserError
from data_pipeline.convert.glyph_render import render_glyph_set
from data_pipeline.shards.image_codec import encode
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.writer import ShardSetWriter


def _key(font: str, class_id: int) -> str:
    # webdataset splits keys at the first dot: keep font names free of dots and odd characters
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', font)}_c{class_id:02d}"


def convert_glyphs(out: Path, size: int = 32, test_fraction: float = 0.2, seed: int = 1993,
                   progress=print) -> Manifest:
    if not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    try:
        gs = render_glyph_set(size=size, test_fraction=test_fraction, seed=seed)
    except FileNotFoundError:
        gs = None
    if gs is None or not gs.train:
        raise UserError("no usable fonts found: install fonts-aenigma, fonts-urw-base35 and the DejaVu fonts "
                        "(scripts/setup.sh does)")
    classes = [{"id": i, "name": n, "key": n} for i, n in enumerate(gs.class_names)]
    writer = ShardSetWriter(out, "glyphs", classes, size, "png", created_by="mnemo shards glyphs")
    for split, items in (("train", gs.train), ("test", gs.test)):
        by_class: dict[int, list] = {}
        for cid, font, img in items:
            by_class.setdefault(cid, []).append((_key(font, cid), encode(img)))
        for cid in range(len(classes)):
            writer.write_class(split, cid, sorted(by_class.get(cid, [])))
        progress(f"[shards] glyphs {split}: {len(items)} images from "
                 f"{len(gs.train_fonts if split == 'train' else gs.test_fonts)} fonts")
    return writer.finish()
