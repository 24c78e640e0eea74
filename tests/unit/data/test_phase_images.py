"""data_pipeline/loading/phase_images.py: lazy per-class decoding of a set of classes."""
import pytest
import torch

from core.errors import UserError
from data_pipeline.loading.phase_images import ClassCache, PhaseImages
from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.reader import read_classes


def test_lazy_set_equals_the_full_decode_and_decodes_only_what_is_touched(digits_shards):
    m = load_manifest(digits_shards)
    ids = [7, 2, 5]
    full = read_classes(m, "train", ids, "glyphs", 32)
    cache = ClassCache()
    s = PhaseImages(m, "train", ids, "glyphs", 32, cache=cache)
    assert torch.equal(s.class_ids, full.class_ids) and len(s) == len(full)       # from the manifest alone
    assert not cache.images                                                      # nothing decoded yet
    assert torch.equal(s.classes([5]), full.images[full.class_ids == 5])
    assert set(cache.images) == {5}
    mask = (full.class_ids == 2) & (torch.arange(len(full)) % 3 == 0)
    assert torch.equal(s[mask], full.images[mask]) and set(cache.images) == {2, 5}
    idx = torch.tensor([len(full) - 1, 0, 45])
    assert torch.equal(s[idx], full.images[idx])
    assert torch.equal(s.images, full.images)
    assert torch.equal(s.span([5, 7]), torch.nonzero(full.class_ids >= 5).flatten())


def test_over_the_cap_nothing_is_kept_and_chunks_respect_their_size(digits_shards):
    m = load_manifest(digits_shards)
    cache = ClassCache()
    small = PhaseImages(m, "train", [0, 1], "glyphs", 32, cache_max_gb=1.0, cache=cache)
    small.classes([0, 1])
    assert set(cache.images) == {0, 1}
    per_class = 40 * 3 * 32 * 32
    big = PhaseImages(m, "train", range(10), "glyphs", 32, cache_max_gb=per_class * 2.5 / 2**30, cache=cache)
    assert not big.fits and not cache.images                   # streaming: the cache is dropped
    got = big.classes([3, 4])
    assert got.shape == (80, 3, 32, 32) and not cache.images
    chunks = big.chunks(per_class * 3)
    assert [c for ch in chunks for c in ch] == list(range(10)) and max(map(len, chunks)) == 3
    assert big.chunks(1) == [[c] for c in range(10)]           # at least one class per chunk
    with pytest.raises(UserError, match="over data.cache_max_gb"):
        big.images


def test_evaluation_in_class_chunks_equals_one_chunk_and_splits_over_ranks(digits_shards, monkeypatch):
    from core.protocol import make_plan
    from exemplars.memory import ExemplarMemory
    from trainer.config import load_config
    from trainer.engine import distributed
    from trainer.engine.distributed import DistInfo
    from trainer.run.evaluate import evaluate
    from trainer.run.session import build_strategy

    m = load_manifest(digits_shards)
    cfg = load_config("configs/glyphs.yaml", ["data.image_size=32"])
    strategy = build_strategy(cfg)
    torch.manual_seed(0)
    model = strategy.build_model()
    model.head.grow(10)
    strategy.num_old, strategy.num_seen = 8, 10
    plan = make_plan(10, 4, 3)
    test = PhaseImages(m, "test", plan.class_ids(range(10)), "glyphs", 32)
    labels = plan.labels_of(test.class_ids)
    memory = ExemplarMemory()
    train = PhaseImages(m, "train", range(10), "glyphs", 32)
    for label in range(10):
        memory.set(label, train.classes([plan.order[label]])[:3].float() / 255)
    run = lambda chunk, rank=0, world=1: evaluate(model, strategy, test, labels, plan, 3, memory,  # noqa: E731
                                                  torch.device("cpu"), 16, True, True,
                                                  DistInfo(rank, world, rank, torch.device("cpu")), chunk)
    whole = run(1 << 30)
    assert whole == run(1)                                       # one class per chunk
    assert len(whole["acc_row"]) == 4 and whole["accuracy_nme"] is not None
    # two ranks: each predicts a strided slice of every chunk, the gathered result is the same
    halves = []
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj: halves.append(obj) or [obj])
    run(3 * 10 * 3 * 32 * 32, 0, 2), run(3 * 10 * 3 * 32 * 32, 1, 2)
    idx = torch.cat([h["idx"] for h in halves])
    assert sorted(idx.tolist()) == list(range(len(labels)))
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj: halves)
    assert run(3 * 10 * 3 * 32 * 32, 0, 2) == whole
