"""SampleReader's open-file budget is shared by every live reader of the process (data_pipeline/shards/samples.py)."""
import gc

import numpy as np

from data_pipeline.shards import samples
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.samples import SampleReader, SampleTable, phase_samples


def _table(n_shards: int) -> SampleTable:
    z = np.zeros(0, dtype=np.int64)
    return SampleTable([f"/nonexistent/shard-{i}.tar" for i in range(n_shards)], z.astype(np.int32), z, z, z, [])


def test_live_readers_share_the_open_file_budget(monkeypatch, caplog):
    """Two readers alive together never reserve more than the budget: the second gets what is left (at
    least one file, reading one thread at a time, with a warning naming the fix), and a collected reader
    gives its share back."""
    gc.collect()
    base = samples._LEDGER.reserved
    monkeypatch.setattr(samples, "open_file_budget", lambda: base + 10)
    first = SampleReader(_table(8))
    assert first.max_open == 8 and first.all_open and first.threads(4) == 4
    with caplog.at_level("WARNING", logger="data_pipeline.shards.samples"):
        second = SampleReader(_table(8))
    assert second.max_open == 2 and not second.all_open and second.threads(4) == 1
    assert "only 2 of its 8 shard files" in caplog.text and "ulimit -n" in caplog.text
    third = SampleReader(_table(8))
    assert third.max_open == 1                                     # never none
    del first, third
    gc.collect()
    assert samples._LEDGER.reserved == base + 2
    assert SampleReader(_table(8)).max_open == 8
    assert SampleReader(_table(3), max_open=50).max_open == 3      # never more than the table has


def test_a_reader_short_of_files_reads_the_same_bytes(digits_shards, monkeypatch):
    """A reader left with one open file (evicting at every shard change) reads what a full one reads."""
    m = load_manifest(digits_shards)
    table = phase_samples(m, "train", list(range(10)))
    full = SampleReader(table)
    want = [full.read(i).tobytes() for i in range(len(table.size))]
    monkeypatch.setattr(samples, "open_file_budget", lambda: samples._LEDGER.reserved + 1)
    short = SampleReader(table)
    assert short.max_open == 1 and len(table.paths) > 1
    order = np.random.default_rng(0).permutation(len(table.size))
    assert all(short.read(int(i)).tobytes() == want[i] for i in order)
    assert len(short._fds) == 1 and short.opened == set(table.paths)
