"""Writes class-grouped webdataset shards and their manifest (format: see manifest.py).

Every converter (`mnemo shards glyphs | imagefolder | cifar100 | ...`) produces (key, image bytes)
samples per class and hands them to `ShardSetWriter`; shards are written under a temporary name and
renamed when complete (each with its DALI index file, wds_index.py), and the manifest is written
last, so an interrupted conversion never leaves a directory that looks finished.
"""
from __future__ import annotations

import io
import re
import struct
import tarfile
from pathlib import Path
from typing import Iterable

from data_pipeline.shards.manifest import MANIFEST, Manifest, ShardInfo, sha256_file
from data_pipeline.shards.wds_index import IndexBuilder, index_path_for

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
_SAFE_KEY = re.compile(r"[\s.]")


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0          # reproducible shards: same input, same bytes, same checksum
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


def write_class_shards(root: Path, split: str, class_id: int, samples: Iterable[tuple[str, bytes]],
                       encoding: str, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[ShardInfo]:
    """Write all samples of one class of one split as `<split>/c<class>-<k>.tar` shards, each with its
    DALI index file (`.idx`, see wds_index.py); returns the shards written. Parallel converters call
    this from worker processes, one class per call."""
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    shards: list[ShardInfo] = []
    tar = index = None
    count = size = 0

    def close():
        nonlocal tar
        if tar is None:
            return
        tar.close()
        final = root / rel
        idx_rel = index_path_for(rel)
        index.write(root / idx_rel)
        tmp.replace(final)
        shards.append(ShardInfo(class_id, rel, count, final.stat().st_size, sha256_file(final), idx_rel))
        tar = None

    for key, payload in samples:
        key = _SAFE_KEY.sub("_", key)       # webdataset ends keys at a dot; DALI index lines split at spaces
        if tar is not None and size + len(payload) > max_shard_bytes:
            close()
        if tar is None:
            rel = f"{split}/c{class_id:05d}-{len(shards):04d}.tar"
            tmp = root / (rel + ".tmp")
            tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
            index = IndexBuilder()
            count = size = 0
        for name, data in ((f"{key}.{encoding}", payload), (f"{key}.cls", str(class_id).encode()),
                           (f"{key}.lbl", struct.pack("<i", class_id))):
            index.add(name, tar.offset + tarfile.BLOCKSIZE, len(data))   # USTAR: one 512-byte header
            _add(tar, name, data)
        count += 1
        size += len(payload) + 3 * 512
    close()
    return shards


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
        shards = write_class_shards(self.root, split, class_id, samples, self.encoding, self.max_shard_bytes)
        self.manifest.splits.setdefault(split, []).extend(shards)
        return shards

    def finish(self, skipped: list[dict] | None = None) -> Manifest:
        for shards in self.manifest.splits.values():
            shards.sort(key=lambda s: (s.class_id, s.path))
        self.manifest.skipped = skipped or []
        self.manifest.write()
        return self.manifest
