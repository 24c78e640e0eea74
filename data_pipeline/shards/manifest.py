"""The shard-set manifest: what a shard directory holds, and checks that it matches its shards.

Layout of a shard directory (written by `mnemo shards ...`, read by every loader):

    DIR/manifest.json
    DIR/<split>/c<class:05d>-<k:04d>.tar   class-grouped webdataset shards: one class per shard

Each sample in a shard has `<key>.<encoding>` (png or jpg image bytes), `<key>.cls` (class id as
text, for webdataset users) and `<key>.lbl` (class id as little-endian int32, for DALI readers).
Beside each shard, `c<class:05d>-<k:04d>.idx` is its DALI webdataset index (wds2idx format,
wds_index.py), named in the shard's `index` field (null in shard sets made before index files;
`mnemo shards index DIR` adds them).

manifest.json:
    {"format": "mnemo-shards", "version": 1, "dataset": str, "image_size": int | null,
     "encoding": "png" | "jpg",
     "classes": [{"id": int, "name": str, "key": str}],         # key: synset id, folder name, ...
     "splits": {"train": [{"class": id, "path": rel, "samples": n, "bytes": n, "sha256": hex,
                           "index": rel | null}], "test": [...]},
     "skipped": [{"path": str, "reason": str}], "created_by": str}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from core import atomic
from core.errors import UserError

FORMAT = "mnemo-shards"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardInfo:
    class_id: int
    path: str
    samples: int
    bytes: int
    sha256: str
    index: str | None = None

    def to_json(self) -> dict:
        return {"class": self.class_id, "path": self.path, "samples": self.samples,
                "bytes": self.bytes, "sha256": self.sha256, "index": self.index}


@dataclass
class Manifest:
    root: Path
    dataset: str
    classes: list[dict]
    splits: dict[str, list[ShardInfo]]
    image_size: int | None
    encoding: str
    skipped: list[dict] = field(default_factory=list)
    created_by: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    def shards(self, split: str, class_ids=None) -> list[ShardInfo]:
        """Shards of `split`, only those of `class_ids` when given (a phase reads only its classes)."""
        if split not in self.splits:
            raise UserError(f"shard set {self.root} has no '{split}' split (it has: {', '.join(self.splits)})")
        if class_ids is None:
            return list(self.splits[split])
        wanted = set(int(c) for c in class_ids)
        return [s for s in self.splits[split] if s.class_id in wanted]

    def count(self, split: str, class_ids=None) -> int:
        return sum(s.samples for s in self.shards(split, class_ids))

    def path(self, shard: ShardInfo) -> Path:
        return self.root / shard.path

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "dataset": self.dataset,
            "image_size": self.image_size, "encoding": self.encoding, "classes": self.classes,
            "splits": {k: [s.to_json() for s in v] for k, v in self.splits.items()},
            "skipped": self.skipped, "created_by": self.created_by,
        }

    def write(self) -> Path:
        out = self.root / MANIFEST
        atomic.write_json(out, self.to_json(), indent=1)
        return out

    def verify(self, checksums: bool = False) -> None:
        """Every shard exists with the recorded size (and, with checksums, the recorded sha256)."""
        for split, shards in self.splits.items():
            for s in shards:
                p = self.path(s)
                if not p.is_file():
                    raise UserError(f"manifest {self.root / MANIFEST} lists {s.path}, which is missing; "
                                    "re-run the `mnemo shards` command that made this directory")
                size = p.stat().st_size
                if size != s.bytes:
                    raise UserError(f"shard {p} has {size} bytes but the manifest says {s.bytes}: "
                                    "the shard or the manifest is stale or truncated; re-create the shards")
                if checksums and sha256_file(p) != s.sha256:
                    raise UserError(f"shard {p} does not match its sha256 in the manifest (corrupted)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(root: str | Path, verify: bool = True) -> Manifest:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"shard directory not found: {root} (create it with `mnemo shards glyphs --out {root}` "
                        "or point data.shards at an existing one)")
    mf = root / MANIFEST
    if not mf.is_file():
        raise UserError(f"{root} has no {MANIFEST}: it is not a mnemo shard directory (or its conversion "
                        "did not finish; re-run `mnemo shards ...`)")
    try:
        raw = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{mf} is not valid JSON (line {e.lineno}): re-create the shards") from None
    if raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise UserError(f"{mf} is not a {FORMAT} v{VERSION} manifest")
    try:
        splits = {
            name: [ShardInfo(int(s["class"]), s["path"], int(s["samples"]), int(s["bytes"]), s["sha256"],
                             s.get("index")) for s in shards]
            for name, shards in raw["splits"].items()
        }
        classes = raw["classes"]
        ids = [int(c["id"]) for c in classes]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{mf} is malformed ({type(e).__name__}: {e}); re-create the shards") from None
    if ids != list(range(len(ids))):
        raise UserError(f"{mf}: class ids must be 0..{len(ids) - 1} in order")
    for name, shards in splits.items():
        for s in shards:
            if not 0 <= s.class_id < len(ids):
                raise UserError(f"{mf}: shard {s.path} names class {s.class_id}, which is not in 'classes'")
    m = Manifest(root=root, dataset=raw.get("dataset", "?"), classes=classes, splits=splits,
                 image_size=raw.get("image_size"), encoding=raw.get("encoding", "png"),
                 skipped=raw.get("skipped", []), created_by=raw.get("created_by", ""))
    if verify:
        m.verify(checksums=False)
    return m
