"""Random access to the samples of chosen classes in class-grouped shards, through their index files.

`phase_samples` lists every sample of the given classes (only those classes' shards are touched)
in the order the in-memory reader uses, (class id, key), so both loaders index samples alike.
`SampleReader` returns a sample's encoded image bytes with one positioned read (`os.pread`) per sample;
it keeps the shard files it opened open (all of a phase's, where the open-file limit allows) and
records which shards it opened.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from core.errors import UserError
from data_pipeline.shards.manifest import Manifest
from data_pipeline.shards.wds_index import shard_index

log = logging.getLogger(__name__)


@dataclass
class SampleTable:
    paths: list[str]                 # absolute shard paths
    shard: np.ndarray                # int32 (N,), index into paths
    offset: np.ndarray               # int64 (N,), byte offset of the image data in the shard
    size: np.ndarray                 # int64 (N,)
    class_id: np.ndarray             # int64 (N,), dataset class ids (manifest)
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.class_id)


def phase_samples(manifest: Manifest, split: str, class_ids) -> SampleTable:
    """All samples of `class_ids` in `split`, sorted by (class id, key); reads only their shards' indexes."""
    ext = manifest.encoding
    rows = []
    paths: list[str] = []
    for s in manifest.shards(split, sorted(int(c) for c in class_ids)):
        entries = shard_index(manifest.root, s)
        if len(entries) != s.samples:
            raise UserError(f"shard {manifest.path(s)} holds {len(entries)} samples but manifest.json says "
                            f"{s.samples}: re-create the shards")
        paths.append(str(manifest.path(s)))
        for e in entries:
            if ext not in e.parts:
                raise UserError(f"shard sample {manifest.path(s)}:{e.key} lacks its .{ext} part: "
                                "the shards do not match the manifest; re-create them")
            off, size = e.parts[ext]
            rows.append((s.class_id, e.key, len(paths) - 1, off, size))
    rows.sort(key=lambda r: (r[0], r[1]))
    if not rows:
        z = np.empty(0, dtype=np.int64)
        return SampleTable(paths, z.astype(np.int32), z, z, z, [])
    cls, keys, shard, off, size = zip(*rows)
    return SampleTable(paths, np.asarray(shard, np.int32), np.asarray(off, np.int64), np.asarray(size, np.int64),
                       np.asarray(cls, np.int64), list(keys))


_RESERVED_FDS = 256                      # left for sockets, logs, checkpoints, DALI and NCCL


def open_file_budget() -> int:
    """How many shard files a reader may keep open: the open-file limit (raised to its hard limit once,
    as far as the system allows) less a reserve."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (ValueError, OSError):
                pass
        return max(16, (soft if soft != resource.RLIM_INFINITY else 65536) - _RESERVED_FDS)
    except ImportError:                   # not POSIX
        return 512


class _Ledger:
    """The open-file budget shared by every live SampleReader of the process: a reader reserves its
    `max_open` when it is made and returns it when it is collected, so readers alive together (a phase's
    loader and its exemplar images, the next phase's) never hold more files than the limit allows."""

    def __init__(self):
        self.reserved, self.lock = 0, threading.Lock()

    def reserve(self, wanted: int) -> int:
        with self.lock:
            got = max(1, min(wanted, open_file_budget() - self.reserved))
            self.reserved += got
        return got

    def release(self, n: int) -> None:
        with self.lock:
            self.reserved -= n


_LEDGER = _Ledger()


class SampleReader:
    """Encoded bytes of samples of a SampleTable.

    `max_open` (default: every shard of the table) bounds the open shard files, within what the process's
    open-file budget (`open_file_budget()`) has left after the other live readers' reservations; beyond it
    the least recently used one is closed. When every shard fits (`all_open`), reads from several threads
    at once are safe: no file is ever closed under a reader."""

    def __init__(self, table: SampleTable, max_open: int | None = None):
        self.table = table
        wanted = max(1, min(len(table.paths), max_open if max_open is not None else len(table.paths)))
        self.max_open = _LEDGER.reserve(wanted)
        weakref.finalize(self, _LEDGER.release, self.max_open)
        if self.max_open < wanted:
            log.warning("shard reader: only %d of its %d shard files may stay open (the open-file limit, less the "
                        "other live readers' %d): reads go one thread at a time; raise `ulimit -n` to read in "
                        "parallel", self.max_open, wanted, _LEDGER.reserved - self.max_open)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self.opened: set[str] = set()

    @property
    def all_open(self) -> bool:
        return self.max_open >= len(self.table.paths)

    def threads(self, wanted: int) -> int:
        """How many threads may read at once: `wanted` (at least 1) when every shard stays open, else 1
        (an evicted file could be closed under another thread's read)."""
        return max(1, wanted) if self.all_open else 1

    def _fd(self, shard: int) -> int:
        with self._lock:
            return self._fd_locked(shard)

    def _fd_locked(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is not None:
            self._fds.move_to_end(shard)
            return fd
        if len(self._fds) >= self.max_open:
            os.close(self._fds.popitem(last=False)[1])
        path = self.table.paths[shard]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise UserError(f"cannot open shard {path}: {e}") from None
        self._fds[shard] = fd
        self.opened.add(path)
        return fd

    def read(self, i: int) -> np.ndarray:
        t = self.table
        size = int(t.size[i])
        data = os.pread(self._fd(int(t.shard[i])), size, int(t.offset[i]))
        if len(data) != size:
            raise UserError(f"shard {t.paths[t.shard[i]]} is shorter than its index says (sample {t.keys[i]}): "
                            "re-create the shards")
        return np.frombuffer(data, dtype=np.uint8)

    def read_many(self, idx) -> list[np.ndarray]:
        return [self.read(int(i)) for i in idx]

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
