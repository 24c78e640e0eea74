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
    from core.ranks import DistInfo
    from trainer.run.evaluate import EvalOptions, evaluate
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
    run = lambda chunk, rank=0, world=1: evaluate(model, strategy, test, plan, 3, memory,  # noqa: E731
                                                  EvalOptions(16, True, True, chunk), DistInfo(rank, world, rank))
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


def _count_decodes(monkeypatch):
    from data_pipeline.loading import phase_images

    calls = []
    real = phase_images.decode_image
    monkeypatch.setattr(phase_images, "decode_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_samples_and_a_ranks_part_decode_only_those_samples(digits_shards, monkeypatch):
    """Random access through the index files gives the full decode's pixels, and decodes nothing else:
    a rank's part of a class is every world-th sample, and the parts of all ranks tile the set."""
    m = load_manifest(digits_shards)
    ids = [3, 6, 8]
    full = read_classes(m, "test", ids, "glyphs", 32)
    calls = _count_decodes(monkeypatch)
    s = PhaseImages(m, "test", ids, "glyphs", 32, workers=2)
    idx = torch.tensor([5, 0, len(full) - 1, 5])
    assert torch.equal(s.samples(idx), full.images[idx]) and len(calls) == 4
    parts = [s.part_span(ids, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(len(full)))
    calls.clear()
    got = s.part([6], 1, 3)
    assert torch.equal(got, full.images[s.part_span([6], 1, 3)]) and len(calls) == len(got) < s.counts[6]
    calls.clear()
    assert torch.equal(s.part([6], 1, 3), got) and not calls                 # kept while the set fits
    s.classes([8])
    calls.clear()
    assert torch.equal(s.samples(s.span([8])[:4]), full.images[s.span([8])[:4]]) and not calls   # decoded class


def test_lazy_images_decode_only_what_a_selection_takes(digits_shards, monkeypatch):
    """A random subset and one batch of a group: only those samples are decoded, once each, and the
    pixels equal the eager decode. A decoded group is returned as a plain tensor."""
    from exemplars.selections.random import pick_random
    from exemplars.selections.base import SelectionContext

    m = load_manifest(digits_shards)
    ids = [1, 4]
    full = read_classes(m, "train", ids, "glyphs", 32)
    calls = _count_decodes(monkeypatch)
    s = PhaseImages(m, "train", ids, "glyphs", 32)
    lazy = s.lazy(ids)
    labels = full.class_ids
    assert len(lazy) == len(full) and lazy.shape == full.images.shape and not calls
    ctx = SelectionContext(0, 0, torch.device("cpu"))
    got = pick_random(lazy, labels, ids, 3, ctx)
    want = pick_random(full.images, labels, ids, 3, ctx)
    assert all(torch.equal(got[c], want[c]) for c in ids) and len(calls) == 6
    new = {0, 2, 4} - set(lazy.decoded)                          # each sample is decoded once per group
    batch = lazy[torch.tensor([0, 2, 4])]
    assert torch.equal(batch.float(), full.images[[0, 2, 4]].float()) and len(calls) == 6 + len(new)
    cropped = lazy.with_view(lambda x: x[..., 2:30, 2:30])
    assert torch.equal(cropped[torch.tensor([0])].tensor(), full.images[:1, :, 2:30, 2:30])
    assert len(calls) == 6 + len(new)
    s.classes(ids)
    assert isinstance(s.lazy(ids), torch.Tensor)


def test_herding_over_lazy_images_holds_one_class_at_a_time(digits_shards, monkeypatch):
    """Herding decodes a lazy group class by class and keeps none of it in the shared cache (the group is
    not held twice, cached and stacked: only the picked stay); its exemplars equal herding over the eager decode. With keep=True
    (mnemonics from herding, which reads the images again) the decodes are cached for the later reads."""
    from exemplars.selections.base import SelectionContext
    from exemplars.selections.herding import herd
    from trainer.methods.models.net import IncrementalNet

    m = load_manifest(digits_shards)
    ids = [1, 4]
    full = read_classes(m, "train", ids, "glyphs", 32)
    torch.manual_seed(0)
    model = IncrementalNet("resnet20", "cifar").eval()
    ctx = SelectionContext(0, 0, torch.device("cpu"))
    want = herd(model, full.images, full.class_ids, ids, 3, ctx)
    calls = _count_decodes(monkeypatch)
    lazy = PhaseImages(m, "train", ids, "glyphs", 32).lazy(ids)
    got = herd(model, lazy, full.class_ids, ids, 3, ctx)
    assert all(torch.equal(got[c], want[c]) for c in ids)
    assert len(calls) == len(full) + 3 * len(ids)                          # every image, then the picked again
    assert len(lazy.decoded) == 3 * len(ids)                               # only the picked stay cached
    kept = herd(model, lazy, full.class_ids, ids, 3, ctx, keep=True)
    assert all(torch.equal(kept[c], want[c]) for c in ids) and len(lazy.decoded) == len(full)


def test_a_narrowed_set_decodes_only_its_samples_when_a_loader_needs_them(digits_shards, monkeypatch):
    """BiC's split: the phase less a few samples is a LazyImages of their positions (nothing decoded), its pixels in
    memory are the full decode's at those positions (by whole classes, kept for later stages, while the set fits the
    cache; beyond it, those samples alone), a split of it narrows again, and the torch loader's limit on decoded bytes
    holds for it as for the whole set; a decoded tensor is narrowed by indexing."""
    from data_pipeline.loading.phase_images import LazyImages, in_memory, narrowed

    m = load_manifest(digits_shards)
    ids = [0, 3, 9]
    full = read_classes(m, "train", ids, "glyphs", 32)
    calls = _count_decodes(monkeypatch)
    cache = ClassCache()
    s = PhaseImages(m, "train", ids, "glyphs", 32, cache=cache)
    keep = torch.arange(len(full)) % 7 != 3
    part = narrowed(s, keep)
    assert isinstance(part, LazyImages) and part.source is s and len(part) == int(keep.sum()) and not calls
    assert torch.equal(part.index, torch.nonzero(keep).flatten())
    few = narrowed(part, torch.tensor([4, 0]))
    assert isinstance(few, LazyImages) and not calls
    assert torch.equal(in_memory(few), full.images[keep][[4, 0]]) and set(cache.images) == {0}  # its class, kept
    assert torch.equal(in_memory(part), full.images[keep]) and set(cache.images) == set(ids)
    assert in_memory(s) is s.images and torch.equal(narrowed(full.images, keep), full.images[keep])
    calls.clear()
    tight = PhaseImages(m, "train", ids, "glyphs", 32, cache_max_gb=30 * 3 * 32 * 32 / 2**30, cache=ClassCache())
    assert not tight.fits
    got = in_memory(narrowed(tight, torch.tensor([45, 2])))
    assert torch.equal(got, full.images[[45, 2]]) and len(calls) == 2                     # those two alone
    assert in_memory(narrowed(tight, torch.arange(30))).shape == (30, 3, 32, 32)
    with pytest.raises(UserError, match="over data.cache_max_gb"):
        in_memory(narrowed(tight, torch.arange(31)))
