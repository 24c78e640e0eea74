"""The DALI loader (CPU pipelines here): exact per-rank split, labels, exemplar mixing, phase-local
shard access. Its pixels against the torch loader's: test_loader_pixels.py."""
import io
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")

from core.ranks import DistInfo  # noqa: E402
from data_pipeline.loading.batch_plan import BatchPlan, epoch_plan  # noqa: E402
from data_pipeline.loading.dali_batches import DaliPhaseBatches  # noqa: E402
from data_pipeline.loading.phase_batches import PhaseBatches  # noqa: E402
from data_pipeline.loading.settings import LoaderOutput  # noqa: E402
from data_pipeline.shards.manifest import load_manifest  # noqa: E402
from data_pipeline.shards.writer import ShardSetWriter  # noqa: E402

PER_CLASS = 7
CLASSES = 6


def _constant_png(value: int, side: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (side, side + value % 5), (value % 256, value // 256, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def id_shards(tmp_path_factory):
    """Shards whose images are constant colours encoding a sample id (R + 256 G): any crop, resize or
    flip keeps the colour, so the loader's output says which sample it is."""
    root = tmp_path_factory.mktemp("idshards")
    w = ShardSetWriter(root, "ids", [{"id": c, "name": f"c{c}", "key": f"c{c}"} for c in range(CLASSES)], None, "png",
                       max_shard_bytes=4000)          # several shards per class
    for c in range(CLASSES):
        w.write_class("train", c, [(f"s{c}_{k:02d}", _constant_png(c * 100 + k, 20 + k)) for k in range(PER_CLASS)])
    return w.finish()


def _ids(x: torch.Tensor) -> list[int]:
    x = x.float()
    centre = x[:, :, x.shape[2] // 2, x.shape[3] // 2] * 255
    return (centre[:, 0].round() + 256 * centre[:, 1].round()).long().tolist()


def _exemplars(n: int, side: int):
    ids = torch.arange(n) + 10_000
    x = torch.zeros(n, 3, side, side)
    x[:, 0] = (ids % 256).float().view(-1, 1, 1) / 255
    x[:, 1] = (ids // 256).float().view(-1, 1, 1) / 255
    return x, ids


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("preset,share", [("imagenet", None), ("cifar", None), ("imagenet", 0.25)])
def test_every_sample_once_per_epoch_equal_steps(id_shards, world, preset, share):
    classes = [1, 3, 4]
    ex_x, ex_ids = _exemplars(5, 16)
    real_ids = sorted(c * 100 + k for c in classes for k in range(PER_CLASS))
    for epoch in (0, 1):
        seen_real, seen_ex, steps = [], [], set()
        for rank in range(world):
            b = DaliPhaseBatches(id_shards, classes, BatchPlan(8, 3, DistInfo(rank, world), share),
                                 LoaderOutput(preset, 16), (ex_x, ex_ids))
            got = list(b.epoch(epoch))
            assert len(got) == b.steps_per_epoch
            steps.add(len(got))
            for x, y in got:
                assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 and len(y) > 0
                ids = _ids(x)
                for i, label in zip(ids, y.tolist()):
                    if i >= 10_000:
                        assert label == i                     # exemplar label travels with its pixels
                        seen_ex.append(i)
                    else:
                        assert label == i // 100              # class id of the sample's shard
                        seen_real.append(i)
        assert len(steps) == 1, "every rank must run the same number of steps"
        assert sorted(seen_real) == real_ids                  # each real sample exactly once
        if share is None:
            assert sorted(seen_ex) == ex_ids.tolist()         # union: each exemplar exactly once
        else:
            counts = np.bincount(np.array(seen_ex) - 10_000, minlength=5)
            assert counts.max() - counts.min() <= 1 and counts.sum() == steps.pop() * 2


def test_same_plan_as_the_in_memory_loader_and_deterministic(id_shards):
    """Both loaders index samples in (class, key) order and follow one epoch plan: same labels per step."""
    classes = [0, 2, 5]
    ex_x, ex_ids = _exemplars(4, 16)
    plan, out = BatchPlan(6, 9, DistInfo(1, 2)), LoaderOutput("imagenet", 16)
    dali = DaliPhaseBatches(id_shards, classes, plan, out, (ex_x, ex_ids))
    n_real = len(classes) * PER_CLASS
    real_labels = torch.tensor([c for c in classes for _ in range(PER_CLASS)])
    mem = PhaseBatches((torch.zeros(n_real, 3, 18, 18, dtype=torch.uint8), real_labels), (ex_x, ex_ids), plan, out)
    a = [(x, y) for x, y in dali.epoch(4)]
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in mem.epoch(4)]
    again = list(DaliPhaseBatches(id_shards, classes, plan, out, (ex_x, ex_ids)).epoch(4))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, again))
    other = [y.tolist() for _, y in dali.epoch(5)]
    assert other != [y.tolist() for _, y in a]


@pytest.mark.parametrize("world", [1, 2])
def test_a_stage_on_part_of_the_phase_streams_those_samples_alone(id_shards, world):
    """A stage's real data narrowed to some samples of the phase (BiC's held-out split, by position): every epoch
    reads each of them exactly once across ranks and no other, under the labels and in the steps of the in-memory
    loader over the same samples; `train_batches` picks the DALI loader for it as for the whole phase."""
    from data_pipeline.loading.loaders import StageData, train_batches
    from data_pipeline.loading.phase_images import PhaseImages, narrowed
    from data_pipeline.loading.settings import DataSettings

    classes = [1, 2, 4]
    ids = [c * 100 + k for c in classes for k in range(PER_CLASS)]           # (class, key) order
    index = torch.tensor([i for i in range(len(ids)) if i % 4 != 1])
    want = sorted(ids[i] for i in index.tolist())
    ex_x, ex_ids = _exemplars(3, 16)
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            plan, out = BatchPlan(5, 7, DistInfo(rank, world)), LoaderOutput("imagenet", 16)
            b = DaliPhaseBatches(id_shards, classes, plan, out, (ex_x, ex_ids), index=index)
            got = list(b.epoch(epoch))
            labels = torch.tensor([ids[i] // 100 for i in index.tolist()])
            mem = PhaseBatches((torch.zeros(len(index), 3, 18, 18, dtype=torch.uint8), labels), (ex_x, ex_ids),
                               plan, out)
            assert [y.tolist() for _, y in got] == [y.tolist() for _, y in mem.epoch(epoch)]
            for x, y in got:
                for i, label in zip(_ids(x), y.tolist()):
                    if i < 10_000:
                        assert label == i // 100
                        seen.append(i)
        assert sorted(seen) == want
    phase = PhaseImages(id_shards, "train", classes, "imagenet", 16)
    labels = phase.class_ids
    keep = torch.zeros(len(labels), dtype=torch.bool)
    keep[index] = True
    data = StageData(narrowed(phase, keep), labels[keep], None, None)
    b = train_batches("dali", DataSettings(preset="imagenet", image_size=16), data, phase, id_shards,
                      BatchPlan(5, 0), {c: c for c in classes})
    assert isinstance(b, DaliPhaseBatches) and torch.equal(b.index, index)
    assert sorted(_ids(torch.cat([x for x, _ in b.epoch(0)]))) == want


def test_real_images_shown_as_stored_come_out_of_dali_as_the_codecs_round_trip(id_shards):
    """exemplars.real_as_stored in the DALI loader: with share 1 every real image is the round trip of the image the
    loader gives without it (the same draws), the exemplars untouched, in both layouts."""
    from data_pipeline.loading.augment import AsStored

    def ramp(x):                                   # a round trip that changes pixels by their column (NCHW)
        return x * torch.linspace(0.5, 1.0, x.shape[-1], dtype=x.dtype)

    classes = [0, 3]
    ex_x, ex_ids = _exemplars(3, 16)
    for layout in ("NCHW", "NHWC"):
        out = LoaderOutput("imagenet", 16, layout=layout)
        plain = list(DaliPhaseBatches(id_shards, classes, BatchPlan(6, 2), out, (ex_x, ex_ids)).epoch(0))
        out = LoaderOutput("imagenet", 16, layout=layout, as_stored=AsStored(1.0, ramp))
        shown = list(DaliPhaseBatches(id_shards, classes, BatchPlan(6, 2), out, (ex_x, ex_ids)).epoch(0))
        for (x0, y0), (x1, y1) in zip(plain, shown):
            real = y0 < 10_000
            assert torch.equal(y0, y1) and torch.equal(x1[~real], x0[~real])
            ramp_w = torch.linspace(0.5, 1.0, 16, dtype=x0.dtype)
            want = x0[real] * (ramp_w[:, None] if layout == "NHWC" else ramp_w)     # NHWC: W is the third axis
            assert torch.equal(x1[real], want)


def test_a_phase_reads_only_its_classes_shards(id_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(id_shards.root, copy)
    m = load_manifest(copy)
    mine = [2, 4]
    for s in m.shards("train"):
        if s.class_id not in mine:          # same size, garbage content: reading it would fail loudly
            for f in (m.path(s), m.root / s.index):
                f.write_bytes(b"\xff" * f.stat().st_size)
    opened, seen = set(), []
    for rank in range(2):
        b = DaliPhaseBatches(m, mine, BatchPlan(5, 0, DistInfo(rank, 2)), LoaderOutput("imagenet", 16))
        ids = _ids(torch.cat([x for x, _ in b.epoch(0)]))
        assert ids == _planned_ids(b, 0)
        seen += ids
        opened |= b.opened_shards
    assert sorted(seen) == [c * 100 + k for c in mine for k in range(PER_CLASS)]
    assert opened == {str(m.path(s)) for s in m.shards("train", mine)}
    assert len(opened) >= 4                                   # several shards per class were read


def _planned_ids(b, epoch):
    """Sample ids of a rank's real samples in plan order (id = class * 100 + position in class)."""
    ids, pos = [], {}
    for c in b.samples.class_id.tolist():
        ids.append(c * 100 + pos.get(c, 0))
        pos[c] = pos.get(c, 0) + 1
    return [ids[i] for r, _ in b.plan(epoch) for i in r.tolist()]


@pytest.mark.parametrize("layout,dtype", [("NCHW", torch.bfloat16), ("NHWC", torch.float16),
                                          ("channels_last", torch.float32)])
def test_layouts_and_dtypes_for_the_model(id_shards, layout, dtype):
    ex_x, ex_ids = _exemplars(3, 16)
    b = DaliPhaseBatches(id_shards, [1], BatchPlan(10, 0), LoaderOutput("imagenet", 16, layout, dtype), (ex_x, ex_ids))
    for x, _ in b.epoch(0):
        assert x.dtype == dtype
        if layout == "NHWC":
            assert x.shape[1:] == (16, 16, 3)
        else:
            assert x.shape[1:] == (3, 16, 16)
            if layout == "channels_last":
                assert x.is_contiguous(memory_format=torch.channels_last)
        assert 0.0 <= float(x.float().min()) and float(x.float().max()) <= 1.0


def test_labels_map_to_the_manifest_classes(imagenet_fixture):
    """Loader labels = the manifest class of each sample's shard = the int32 label stored in the sample."""
    import webdataset as wds

    from core.protocol import make_plan

    tree, m = imagenet_fixture
    plan = make_plan(m.num_classes, 500, 25)
    label_of = plan.label_of()
    cids = plan.class_ids(plan.new_labels(7))
    b = DaliPhaseBatches(m, cids, BatchPlan(16, 1), LoaderOutput("imagenet", 32), label_of=label_of)
    stored = {}
    for s in m.shards("train", cids):
        for sample in wds.WebDataset(str(m.path(s)), shardshuffle=False, empty_check=False):
            stored[sample["__key__"]] = struct.unpack("<i", sample["lbl"])[0]
    assert len(stored) == len(b.samples) == 2 * len(cids)
    for key, cid, label in zip(b.samples.keys, b.samples.class_id.tolist(), b.labels.tolist()):
        assert stored[key] == cid and label == label_of[cid]
        assert key.startswith(m.classes[cid]["key"])          # train keys are <synset>_<k>
    got = torch.cat([y for _, y in b.epoch(0)])
    assert sorted(got.tolist()) == sorted(label_of[c] for c in cids for _ in range(2))


def test_dali_reads_the_index_files_with_its_own_webdataset_reader(imagenet_fixture):
    from data_pipeline.loading.dali_pipeline import read_webdataset_labels

    _, m = imagenet_fixture
    shards = m.shards("test", range(10))
    labels = read_webdataset_labels([str(m.path(s)) for s in shards], [str(m.root / s.index) for s in shards])
    assert labels == [s.class_id for s in shards for _ in range(s.samples)]


def test_plan_is_shared_by_both_loaders_for_exemplar_only_stages():
    plan = epoch_plan(0, 9, 4, DistInfo(0, 2), seed=1, epoch=0)
    assert all(len(r) == 0 and len(e) > 0 for r, e in plan)


def test_loader_profile_prints_one_json_object(imagenet_fixture, capsys):
    import json

    from benchmarks.loader_profile import main

    _, m = imagenet_fixture
    assert main(["--shards", str(m.root), "--images", "24", "--size", "32", "--threads", "1", "--batch-size", "8",
                 "--fallback-workers", "0", "--skip-inmemory"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 24 and out["threads"] == 1
    for side in ("dali_cpu", "torch_fallback"):
        assert out[side]["train_img_s"] > 0 and out[side]["eval_img_s"] > 0
        assert out[side]["images_timed"] == 16                  # the first batch of 8 is not timed
    assert out["dali_speedup_train"] > 0


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_one_pipeline_serves_a_stage_and_a_resumed_epoch_draws_the_same(digits_shards, preset):
    """The pipeline is built once per stage; its augmentation comes in with each batch, drawn from
    (seed, epoch, rank), so epoch 2 of a stage that ran epochs 0-1 equals epoch 2 of a fresh stage (a
    resume), while epochs differ from each other."""
    m = load_manifest(digits_shards)
    make = lambda: DaliPhaseBatches(m, [0, 3, 7], BatchPlan(16, 5), LoaderOutput(preset, 32, threads=2))  # noqa: E731
    running = make()
    epochs = [torch.cat([x for x, _ in running.epoch(e)]) for e in range(3)]
    assert running.pipelines_built == 1
    resumed = torch.cat([x for x, _ in make().epoch(2)])
    assert torch.equal(resumed, epochs[2])
    assert not torch.equal(epochs[1], epochs[2])
    half = running.epoch(3)                     # a stage left mid-epoch releases its pipeline ...
    next(half)
    half.close()
    assert torch.equal(torch.cat([x for x, _ in running.epoch(2)]), epochs[2])     # ... the next builds anew
    assert running.pipelines_built == 2


def _png(array: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def test_the_pipeline_applies_the_translation_crop_window_and_flip_it_is_given():
    """x is the first axis of a shift and of a window: a 32 px image shifted by (+3, -2) holds pixel
    (y + (-2), x + 3) of the original (zeros outside), and flipped mirrors that; a window over the left
    half of a red | blue image decodes to red."""
    from data_pipeline.loading.dali_pipeline import PipeSpec, build_pipeline, to_torch

    ramp = np.zeros((32, 32, 3), np.uint8)
    ramp[..., 0] = np.arange(32)[None, :] * 8          # R grows with x
    ramp[..., 1] = np.arange(32)[:, None] * 8          # G grows with y
    feed = [([_png(ramp)] * 2, np.array([[3, -2], [3, -2]], np.float32), np.array([0, 1], np.int32))]
    spec = PipeSpec("train", "cifar", 32, threads=1)
    it = iter(feed)
    pipe = build_pipeline(lambda: next(it), spec, 2)
    (out,) = pipe.run()
    x = (to_torch(out, spec) * 255).round().to(torch.uint8)
    want = torch.zeros(3, 32, 32, dtype=torch.uint8)
    src = torch.from_numpy(ramp).permute(2, 0, 1)
    want[:, 2:, :29] = src[:, :30, 3:]
    assert torch.equal(x[0], want) and torch.equal(x[1], want.flip(-1))

    halves = np.zeros((40, 80, 3), np.uint8)
    halves[:, :40, 0] = 255
    halves[:, 40:, 2] = 255
    feed = [([_png(halves)], np.array([[0, 0]], np.float32), np.array([[40, 40]], np.float32), np.array([0], np.int32))]
    spec = PipeSpec("train", "imagenet", 16, threads=1)
    it = iter(feed)
    (out,) = build_pipeline(lambda: next(it), spec, 1).run()
    mean = to_torch(out, spec)[0].mean((1, 2))
    assert mean[0] > 0.95 and mean[2] < 0.05, mean
