"""DALI webdataset index files (the `wds2idx` format, v1.2) for class-grouped shards.

An index file sits beside its shard (`train/c00007-0000.tar` -> `train/c00007-0000.idx`) and is
recorded in the manifest's `index` field. Line 1 is `v1.2 <samples>`; then one line per sample with
`<ext> <data offset> <size> <member name>` for each of its parts, e.g.
`jpg 1536 23871 n01440764_18.jpg cls 25600 3 n01440764_18.cls lbl 26624 4 n01440764_18.lbl`.
`fn.readers.webdataset(index_paths=...)` reads it, and so do mnemo's own loaders, which seek
straight to a sample's image bytes (a phase reads only its classes' samples, in its own order).

Writers build the index while writing the tar (`IndexBuilder`); `index_tar` makes one for an
existing tar by reading its headers only (no data), and `add_index_files` adds the missing ones to a
whole shard directory (`mnemo shards index DIR`).
"""
from __future__ import annotations

import functools
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from core import atomic
from core.errors import UserError

INDEX_VERSION = "v1.2"


def index_path_for(shard_rel: str) -> str:
    """`train/c00007-0000.tar` -> `train/c00007-0000.idx` (wds2idx's default name)."""
    return shard_rel[: -len(".tar")] + ".idx" if shard_rel.endswith(".tar") else shard_rel + ".idx"


def split_name(member: str) -> tuple[str, str]:
    """webdataset's rule: the key ends at the first dot of the file name."""
    base = member.rfind("/") + 1
    dot = member.find(".", base)
    return (member, "") if dot < 0 else (member[:dot], member[dot + 1:])


@dataclass
class IndexedSample:
    key: str
    parts: dict[str, tuple[int, int]]       # ext -> (data offset, size)


class IndexBuilder:
    """Collects (member name, data offset, size) while a tar is written, in tar order."""

    def __init__(self):
        self.samples: list[tuple[str, list[tuple[str, int, int, str]]]] = []

    def add(self, member: str, offset: int, size: int) -> None:
        if any(c.isspace() for c in member):
            raise ValueError(f"tar member names must not contain white space (DALI index): {member!r}")
        key, ext = split_name(member)
        if not self.samples or self.samples[-1][0] != key:
            self.samples.append((key, []))
        self.samples[-1][1].append((ext, offset, size, member))

    def text(self) -> str:
        lines = [f"{INDEX_VERSION} {len(self.samples)}"]
        for _, parts in self.samples:
            lines.append(" ".join(f"{ext} {off} {size} {name}" for ext, off, size, name in parts))
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        atomic.write_text(path, self.text())


def index_tar(tar_path: Path) -> IndexBuilder:
    """Index of an existing tar from its headers (tarfile seeks over the data)."""
    b = IndexBuilder()
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for m in tar:
                if m.isfile():
                    b.add(m.name, m.offset_data, m.size)
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"cannot read shard {tar_path}: {e}; re-create the shards") from None
    return b


def read_index(path: Path) -> list[IndexedSample]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise UserError(f"cannot read index file {path}: {e} (re-create it with `mnemo shards index DIR`)") from None
    head = lines[0].split() if lines else []
    if len(head) != 2 or not head[0].startswith("v1.") or int(head[1]) != len(lines) - 1:
        raise UserError(f"{path} is not a complete DALI webdataset index (re-create it with `mnemo shards index DIR`)")
    out = []
    for line in lines[1:]:
        tok = line.split()
        if len(tok) % 4:
            raise UserError(f"{path}: malformed index line {line[:80]!r}")
        parts = {tok[i]: (int(tok[i + 1]), int(tok[i + 2])) for i in range(0, len(tok), 4)}
        out.append(IndexedSample(split_name(tok[3])[0], parts))
    return out


def shard_index(root: Path, shard) -> list[IndexedSample]:
    """The samples of a manifest shard: from its index file, or (older shard sets) from its tar headers."""
    if shard.index and (root / shard.index).is_file():
        return read_index(root / shard.index)
    b = index_tar(root / shard.path)
    return [IndexedSample(k, {ext: (off, size) for ext, off, size, _ in parts}) for k, parts in b.samples]


def add_index_files(root: str | Path, progress=print):
    """Write the missing index files of a shard directory and record them in its manifest."""
    from data_pipeline.shards.manifest import load_manifest

    m = load_manifest(root)
    made = 0
    for split, shards in m.splits.items():
        for i, s in enumerate(shards):
            rel = s.index or index_path_for(s.path)
            if not (m.root / rel).is_file():
                index_tar(m.path(s)).write(m.root / rel)
                made += 1
            shards[i] = replace(s, index=rel)
    m.write()
    progress(f"[shards] {m.root}: wrote {made} index files; all {sum(len(v) for v in m.splits.values())} "
             "shards have one")
    return m


@functools.lru_cache(maxsize=None)
def _image_bytes(root: Path, split: str, class_id: int, encoding: str, shards: tuple) -> float:
    sizes = [sample.parts[encoding][1] for shard in shards for sample in shard_index(root, shard)
             if encoding in sample.parts]
    if not sizes:
        raise UserError(f"{root}: the {split} shards of class {class_id} hold no '{encoding}' images")
    return sum(sizes) / len(sizes)


def mean_image_bytes(manifest, split: str, class_id: int) -> float:
    """Mean bytes of the image part of a class's samples, as the shards store them (from the index files, or the
    tar headers of shards without one: no image is read)."""
    return _image_bytes(Path(manifest.root), split, int(class_id), manifest.encoding,
                        tuple(manifest.shards(split, [class_id])))
