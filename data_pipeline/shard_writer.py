"""Writes class-grouped webdataset shards and their manifest (format: see manifest.py).

Every converter (`mnemo shards glyphs | imagefolder | cifar100 | ...`) produces (key, image bytes)
samples per class and hands them to `ShardSetWriter`; shards are written under a temporary name and
renamed when complete, and the manifest is written last, so an interrupted conversion never leaves a
directory that looks finished.
"""
from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path
from typing import Iterable

from data_pipeline.manifest import MANIFEST, Manifest, ShardInfo, sha256_file

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0          # reproducible shards: same input, same bytes, same checksum
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


class ShardSetWriter:
    def __init__(self, out_dir: str | Path, dataset: str, classes: list[dict], image_size: int | None,
                 encoding: str = "png", max_shard_bytes: int = DEFAULT_SHARD_BYTES, created_by: str = ""):
        self.root = Path(out_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        stale = self.root / MANIFEST
        if stale.exists():
            stale.unlink()          # the directory is being rewritten: it is not complete until the end
        self.manifest = Manifest(root=self.root, dataset=dataset, classes=classes, splits={},
                                 image_size=image_size, encoding=encoding, created_by=created_by)
        self.encoding = encoding
        self.max_shard_bytes = max_shard_bytes

    def write_class(self, split: str, class_id: int, samples: Iterable[tuple[str, bytes]]) -> list[ShardInfo]:
        """Write all samples of one class of one split; returns the shards written."""
        (self.root / split).mkdir(parents=True, exist_ok=True)
        shards: list[ShardInfo] = []
        tar = None
        count = size = 0

        def close():
            nonlocal tar
            if tar is None:
                return
            tar.close()
            final = self.root / rel
            tmp.replace(final)
            shards.append(ShardInfo(class_id, rel, count, final.stat().st_size, sha256_file(final)))
            tar = None

        for key, payload in samples:
            if tar is not None and size + len(payload) > self.max_shard_bytes:
                close()
            if tar is None:
                rel = f"{split}/c{class_id:05d}-{len(shards):04d}.tar"
                tmp = self.root / (rel + ".tmp")
                tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
                count = size = 0
            _add(tar, f"{key}.{self.encoding}", payload)
            _add(tar, f"{key}.cls", str(class_id).encode())
            _add(tar, f"{key}.lbl", struct.pack("<i", class_id))
            count += 1
            size += len(payload) + 3 * 512
        close()
        self.manifest.splits.setdefault(split, []).extend(shards)
        return shards

    def finish(self, skipped: list[dict] | None = None) -> Manifest:
        for shards in self.manifest.splits.values():
            shards.sort(key=lambda s: (s.class_id, s.path))
        self.manifest.skipped = skipped or []
        self.manifest.write()
        return self.manifest
