"""Exemplar codecs (exemplars/codecs/) and a memory counted in bytes: each form round-trips within its stated
error, costs what it says, and a memory never holds more bytes than its budget."""
import pytest
import torch
import torch.nn.functional as F

from exemplars.codecs.base import REGISTRY, build_codec, quantise
from exemplars.codecs.jpeg import Jpeg, JpegSettings
from exemplars.codecs.lowres import Lowres, LowresSettings
from exemplars.codecs.png import Png
from exemplars.codecs.raw import Raw
from exemplars.memory import ExemplarMemory


def smooth(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Float images in [0, 1] without detail finer than 8 px: bilinear upsampling of random 8x-smaller ones."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, side // 8, side // 8, generator=g)
    return F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


def test_raw_is_the_memory_before_codecs():
    x = torch.rand(4, 3, 8, 8)
    stored = Raw().store(x)
    assert stored.dtype == torch.float16 and torch.equal(stored, x.half())
    assert Raw().nbytes(stored).tolist() == [2 * 3 * 8 * 8] * 4 and not Raw.counts_bytes
    memory = ExemplarMemory()
    memory.set(0, x)
    assert memory.get(0) is memory.bank[0]                  # no decode, no copy: what every raw run did


def test_png_loses_only_the_quantisation_and_costs_its_file():
    from torchvision.io import decode_png, encode_png

    x = torch.rand(3, 3, 16, 16)
    stored = Png().store(x)
    assert (stored.float() - x).abs().max() <= 0.5 / 255 + 1e-3           # 8-bit levels, held exactly in float16
    assert torch.equal(quantise(stored), quantise(x))
    assert Png().nbytes(stored).tolist() == [len(encode_png(quantise(x)[i], compression_level=6)) for i in range(3)]
    assert torch.equal(decode_png(encode_png(quantise(x)[0])), quantise(stored)[0])   # the cost is of a real file


@pytest.mark.parametrize("quality", [50, 90])
def test_jpeg_holds_what_a_file_decodes_to_and_costs_that_file_within_a_percent(quality):
    from torchvision.io import decode_jpeg, encode_jpeg

    codec = Jpeg(JpegSettings(quality=quality))
    x = torch.cat([smooth(4, 32, seed=6), torch.rand(2, 3, 32, 32), torch.full((1, 3, 32, 32), 0.4)])
    stored = codec.store(x)
    assert stored.dtype == torch.float16 and stored.shape == x.shape
    files = [encode_jpeg(p, quality=quality) for p in quantise(x)]
    assert torch.equal(torch.stack([decode_jpeg(f) for f in files]), quantise(stored))   # exactly a file's decode
    again = [encode_jpeg(p, quality=quality) for p in quantise(stored)]
    assert codec.nbytes(stored).tolist() == [len(f) for f in again]           # the cost: the stored pixels' own file
    ratio = codec.nbytes(stored).double() / torch.tensor([len(f) for f in files], dtype=torch.float64)
    # within 1 % of the first file's size for images with content (smooth, flat); uniform noise measured to 0.965
    assert ((ratio[[0, 1, 2, 3, 6]] - 1).abs() <= 0.01).all() and ((ratio - 1).abs() <= 0.05).all(), ratio
    # within its stated error: smooth images within 0.03 a value on average (measured 0.021 at 50, 0.011 at 90),
    # a flat one within two levels
    assert (stored[:4].float() - x[:4]).abs().mean() < 0.03
    assert (stored[-1].float() - 0.4).abs().max() <= 2 / 255 + 1e-3
    assert codec.nbytes(stored)[:4].float().mean() < 3 * 32 * 32          # smaller than the bare 8-bit pixels
    low = Jpeg(JpegSettings(quality=10))
    assert low.nbytes(low.store(x[:4])).sum() < codec.nbytes(stored[:4]).sum()     # a lower quality costs less


@pytest.mark.parametrize("factor", [2, 4])
def test_lowres_stores_a_smaller_side_and_decodes_to_the_models(factor):
    x = smooth(5, 32)
    codec = Lowres(LowresSettings(factor=factor, encoding="pixels"))
    stored = codec.store(x)
    assert stored.shape == (5, 3, 32 // factor, 32 // factor)
    assert codec.nbytes(stored).tolist() == [3 * (32 // factor) ** 2] * 5
    back = codec.decode(stored, 32)
    assert back.shape == x.shape
    # images without detail finer than 8 px come back within 0.03 a value on average (measured 0.006 at 1/2, 0.023 at
    # 1/4; the glyphs, whose strokes are finer, lose more: docs/benchmarks.md)
    assert (back.float() - x).abs().mean() < 0.03
    flat = torch.full((1, 3, 32, 32), 0.4)                            # a flat image comes back exactly (to 1/255)
    assert (codec.decode(codec.store(flat), 32).float() - 0.4).abs().max() <= 0.5 / 255 + 1e-3
    with pytest.raises(ValueError, match="does not divide"):
        codec.store(torch.rand(1, 3, 30, 30)) if factor == 4 else codec.store(torch.rand(1, 3, 31, 31))


def test_codecs_are_plugins_with_validated_settings():
    assert {"raw", "png", "lowres", "jpeg"} <= set(REGISTRY.known())
    with pytest.raises(ValueError, match="encoding"):
        LowresSettings(encoding="zip")
    with pytest.raises(ValueError, match="quality must be in 1..100, got 0"):
        JpegSettings(quality=0)

    class Section:
        codec, lowres = "lowres", LowresSettings(factor=4)
    assert isinstance(build_codec(Section()), Lowres) and build_codec(None).name == "raw"


def test_a_memory_fits_its_bytes_and_decodes_where_used():
    codec = Lowres(LowresSettings(factor=2))
    memory = ExemplarMemory(codec, side=16)
    memory.set(3, smooth(40, 16))
    costs = memory.nbytes(3)
    assert memory.bank[3].shape[-1] == 8 and memory.get(3).shape[-1] == 16
    budget = float(costs[:7].sum()) + 1
    memory.fit({3: budget})
    assert len(memory.bank[3]) == 7 and int(memory.nbytes(3).sum()) <= budget
    x, y = memory.tensors()
    assert x.shape == (7, 3, 16, 16) and y.tolist() == [3] * 7
    assert ExemplarMemory(codec).bank == {}
    with pytest.raises(ValueError, match="side"):
        lone = ExemplarMemory(codec)
        lone.set(0, smooth(1, 16))
        lone.get(0)


def _update(codec_keys: list[str], memory_keys: list[str], phases: list[list[int]], image_bytes: float = 700.0):
    """Herding through the exemplar update, phase by phase ({label: held} after each, the memory)."""
    from exemplars.selections.base import SelectionContext
    from exemplars.update import PhaseClasses, update_memory
    from trainer.config import load_config
    from trainer.methods.models.net import IncrementalNet

    cfg = load_config("configs/glyphs.yaml", ["data.image_size=16", "exemplars.group_size=2", *codec_keys,
                                              *memory_keys])
    torch.manual_seed(0)
    model = IncrementalNet(cfg.model.arch, cfg.data.preset)
    memory = ExemplarMemory(build_codec(cfg.exemplars), 16)
    images = (smooth(6 * 60, 16, seed=1) * 255).round().to(torch.uint8)
    labels = torch.arange(6).repeat_interleave(60)
    held, seen = [], []
    for p, new in enumerate(phases):
        model.head.grow(len(new))
        pick = lambda group: (images[torch.isin(labels, torch.tensor(group))],             # noqa: E731
                              labels[torch.isin(labels, torch.tensor(group))])
        phase = PhaseClasses(new, list(seen), pick, {l: 60 for l in new}, {l: image_bytes for l in seen + new})
        info = update_memory(model, memory, phase, cfg.exemplars, SelectionContext(0, p, torch.device("cpu"),
                                                                                    image_size=16))
        seen += new
        held.append(({l: len(memory.bank[l]) for l in seen}, info))
    return held, memory


def test_a_memory_counted_in_bytes_never_exceeds_them_and_holds_more_of_a_smaller_form():
    per_class = 4
    raw, _ = _update([], [f"exemplars.per_class={per_class}"], [[0, 1], [2, 3]])
    assert all(n == per_class for n in raw[-1][0].values()) and "bytes" not in raw[-1][1]
    low, memory = _update(["exemplars.codec=lowres", "exemplars.lowres.encoding=pixels"],
                          [f"exemplars.per_class={per_class}"], [[0, 1], [2, 3]])
    held, info = low[-1]
    # 4 originals of 700 bytes = 2,800 bytes a class; an 8 px exemplar costs 3·8·8 = 192: 14 a class
    assert set(held.values()) == {2800 // 192} and info["held_min"] == 14 and info["bytes"] == 4 * 14 * 192
    for label in held:
        assert int(memory.nbytes(label).sum()) <= per_class * 700.0
    png, memory = _update(["exemplars.codec=lowres"], [f"exemplars.per_class={per_class}"], [[0, 1]])
    assert all(int(memory.nbytes(l).sum()) <= per_class * 700.0 for l in (0, 1))
    assert png[-1][1]["bytes"] <= png[-1][1]["budget_bytes"]
    jpg, memory = _update(["exemplars.codec=jpeg"], [f"exemplars.per_class={per_class}"], [[0, 1]], 2000.0)
    assert all(int(memory.nbytes(l).sum()) <= per_class * 2000.0 for l in (0, 1)) and jpg[-1][1]["held_min"] > 4


def test_a_fixed_total_in_bytes_shrinks_the_old_classes_as_classes_arrive():
    got, memory = _update(["exemplars.codec=lowres", "exemplars.lowres.encoding=pixels"], ["exemplars.budget=12"],
                          [[0, 1], [2, 3], [4, 5]])
    # budget 12 images: 6 a class over 2 seen classes, 3 over 4, 2 over 6; in 192-byte exemplars of 700-byte originals
    assert [set(h.values()) for h, _ in got] == [{6 * 700 // 192}, {3 * 700 // 192}, {2 * 700 // 192}]
    assert got[0][1]["budget_bytes"] == 2 * 6 * 700 and got[-1][1]["bytes"] <= got[-1][1]["budget_bytes"]


@pytest.mark.parametrize("codec", [Raw(), Png(), Jpeg(JpegSettings(quality=75)),
                                   Lowres(LowresSettings(factor=2, encoding="pixels"))], ids=lambda c: c.name)
def test_a_loader_keeps_the_packed_memory_and_unpacks_each_batch_to_the_same_pixels(codec):
    """What the loaders keep on the device for a stage (ExemplarMemory.packed: uint8 at the stored side for the 8-bit
    forms) unpacks, a batch at a time, to the pixels the decoded memory gives, bit for bit."""
    from data_pipeline.loading.on_device import ExemplarBank
    from exemplars.codecs.base import STORE_DTYPE

    memory = ExemplarMemory(codec, side=16)
    for label in (4, 1, 7):
        memory.set(label, smooth(5, 16, seed=label))
    pixels, labels = memory.tensors([1, 4, 7], STORE_DTYPE)
    packed, packed_labels = memory.packed([1, 4, 7])
    assert torch.equal(packed_labels, labels)
    values = 2 if codec.name == "raw" else 1
    side = 8 if codec.name == "lowres" else 16
    assert packed.dtype == (torch.float16 if codec.name == "raw" else torch.uint8)
    assert packed.numel() * packed.element_size() == 15 * 3 * side * side * values    # lowres x1/2: a quarter
    idx = torch.tensor([14, 0, 3, 3, 9])
    x, y = ExemplarBank(packed, packed_labels, torch.device("cpu"), memory.unpack).take(idx)
    x0, y0 = ExemplarBank(pixels, labels, torch.device("cpu")).take(idx)
    assert x.dtype == torch.float32 and torch.equal(x, x0) and torch.equal(y, y0)
    assert memory.packed([3]) == (None, None)


@pytest.mark.parametrize("codec", [Png(), Jpeg(JpegSettings(quality=75)), Lowres(LowresSettings(factor=2))],
                         ids=lambda c: c.name)
def test_a_round_trip_is_the_memory_storing_and_decoding(codec):
    """exemplars.real_as_stored shows a real image as `round_trip`: bit for bit what storing it in the memory and
    decoding it gives, in the batch's dtype."""
    x = smooth(5, 16, seed=2)
    assert torch.equal(codec.round_trip(x), codec.decode(codec.store(x), 16).float())
    assert codec.round_trip(x.double()).dtype == torch.float64


@pytest.mark.parametrize("codec", [Png(), Lowres(LowresSettings(factor=2))], ids=lambda c: c.name)
def test_an_arithmetic_store_round_trips_a_batch_on_its_own_device(codec):
    """png's and lowres's stores are tensor arithmetic, so a batch's round trip runs where the batch is (a GPU batch
    never visits the host). Run here on the meta device, which cannot copy to the host (`.cpu()` raises)."""
    x = torch.empty(4, 3, 16, 16, device="meta")
    with pytest.raises(NotImplementedError):
        x.cpu()
    got = codec.round_trip(x)
    assert got.device.type == "meta" and got.shape == x.shape and got.dtype == x.dtype


def test_lowres_stores_a_decoded_exemplar_as_what_it_came_from():
    codec = Lowres(LowresSettings(factor=2))
    stored = codec.store(torch.rand(6, 3, 16, 16))
    assert torch.equal(codec.store(codec.decode(stored, 16)), stored)
    # the least-squares low-resolution image decodes closer to the exemplar than the block average does
    x = smooth(6, 16, seed=3)
    block = F.interpolate(F.avg_pool2d(x, 2), size=(16, 16), mode="bilinear", align_corners=False)
    assert (codec.decode(codec.store(x), 16).float() - x).square().mean() < (block - x).square().mean()


def test_a_pixel_descent_through_a_low_resolution_memory_optimises_the_stored_pixels():
    """With `lowres` the descent moves the stored tensor: what the selection returns is a decoded low-resolution
    image (storing it loses nothing but the rounding), moved from herding's by the objective."""
    from exemplars.pixel_descent import Schedule, descend_stored

    codec = Lowres(LowresSettings(factor=2, encoding="pixels"))
    x0 = smooth(4, 16, seed=4)
    target = smooth(4, 16, seed=5)
    loss_of = lambda x, real: (x - target).square().sum()                                  # noqa: E731
    schedule = Schedule(epochs=3, steps_per_epoch=2, batches_per_step=1, lr=0.05, halve_every=10)
    got = descend_stored(x0, loss_of, lambda epoch: [(torch.zeros(1), torch.zeros(1))] * 2, schedule, codec=codec)
    assert got.shape == x0.shape
    assert torch.allclose(codec.decode(codec.store(got), 16).float(), got.float(), atol=1 / 255)   # decodable
    start = codec.decode(codec.store(x0), 16).float()
    assert (got.float() - target).square().sum() < (start - target).square().sum()         # it descended
    plain = descend_stored(x0, loss_of, lambda epoch: [(torch.zeros(1), torch.zeros(1))] * 2, schedule)
    assert not torch.allclose(codec.decode(codec.store(plain), 16).float(), plain.float(), atol=1 / 255)


def test_tools_read_a_sealed_memory_as_the_run_stored_it():
    memory = ExemplarMemory(Lowres(LowresSettings(factor=2, encoding="pixels")), side=16)
    memory.set(0, smooth(3, 16))
    state = memory.state_dict()
    back = ExemplarMemory.of_run(state, {"codec": "lowres", "lowres": {"factor": 2, "encoding": "pixels"}}, 16)
    assert back.view()[0].shape == (3, 3, 16, 16) and torch.equal(back.view()[0], memory.get(0))
    old = ExemplarMemory.of_run({"bank": {0: torch.rand(2, 3, 16, 16).half()}}, {"selection": "herding"}, None)
    assert old.codec.name == "raw" and old.view()[0].shape == (2, 3, 16, 16)   # a run from before codecs


def test_a_factor_that_does_not_divide_the_side_is_refused_at_start():
    from core.errors import UserError
    from trainer.config import load_config

    with pytest.raises(UserError, match=r"exemplars.lowres.*factor 3 does not divide data.image_size 32"):
        load_config("configs/glyphs.yaml", ["exemplars.codec=lowres", "exemplars.lowres.factor=3"])
    assert load_config("configs/glyphs.yaml", ["exemplars.codec=lowres", "exemplars.lowres.factor=4"])
