import pytest
import torch

from core.ranks import DistInfo
from data_pipeline.loading.batch_plan import BatchPlan
from data_pipeline.loading.phase_batches import PhaseBatches
from data_pipeline.loading.settings import LoaderOutput


def _batches(n_real, n_ex, batch, rank, world):
    real = torch.arange(n_real, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    ex = torch.zeros(n_ex, 3, 4, 4)
    return PhaseBatches((real, torch.arange(n_real)), (ex, torch.arange(n_real, n_real + n_ex)),
                        BatchPlan(batch, 3, DistInfo(rank, world)), LoaderOutput("glyphs", 4), augment=False)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n_real,n_ex,batch", [(50, 7, 8), (13, 0, 4), (9, 5, 16), (64, 16, 20)])
def test_every_sample_exactly_once_and_equal_steps(world, n_real, n_ex, batch):
    for epoch in range(2):
        seen, steps = [], set()
        for rank in range(world):
            b = _batches(n_real, n_ex, batch, rank, world)
            got = list(b.epoch(epoch))
            steps.add(len(got))
            assert len(got) == b.steps_per_epoch
            for x, y in got:
                assert len(y) > 0
                seen += y.tolist()
        assert len(steps) == 1, "ranks must run the same number of steps"
        assert sorted(seen) == list(range(n_real + n_ex))


def test_one_and_two_ranks_see_the_same_global_batches():
    one = [set(y.tolist()) for _, y in _batches(40, 10, 10, 0, 1).epoch(0)]
    r0 = [set(y.tolist()) for _, y in _batches(40, 10, 10, 0, 2).epoch(0)]
    r1 = [set(y.tolist()) for _, y in _batches(40, 10, 10, 1, 2).epoch(0)]
    assert one == [a | b for a, b in zip(r0, r1)]


def test_epochs_differ_and_are_deterministic():
    a = [y.tolist() for _, y in _batches(40, 0, 10, 0, 1).epoch(0)]
    assert a == [y.tolist() for _, y in _batches(40, 0, 10, 0, 1).epoch(0)]
    assert a != [y.tolist() for _, y in _batches(40, 0, 10, 0, 1).epoch(1)]


def test_real_images_are_scaled_to_unit_range():
    x, _ = next(iter(_batches(10, 0, 10, 0, 1).epoch(0)))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 9 / 255 + 1e-6


def test_exemplar_augmentation_never_reads_a_device_value_and_keeps_its_draws():
    """Pad-crop and flip queue work without a host read (no .item()/bool(), no value-dependent shape:
    on a GPU each would stall the step), and draw exactly what the masked flip drew before."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from data_pipeline.loading.augment import augment_exemplars, random_flip

    class Reads(TorchDispatchMode):
        ops: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.split("::")[-1]
            if name in ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero"):
                Reads.ops.append(name)
            return func(*args, **(kwargs or {}))

    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with Reads():
        augment_exemplars(x, "cifar", torch.Generator().manual_seed(1))
    assert Reads.ops == []
    flip = torch.rand(16, generator=torch.Generator().manual_seed(2)) < 0.5
    before = x.clone()
    before[flip] = x[flip].flip(-1)                   # the earlier, host-reading implementation
    assert torch.equal(random_flip(x, torch.Generator().manual_seed(2)), before)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_real_images_shown_as_stored_are_the_codecs_round_trip_of_the_same_draws(share):
    """exemplars.real_as_stored: a share of the real images, after their augmentation, comes out as the memory's codec
    gives a stored image back (lowres x1/2: blurred); the rest, and the exemplars, are the batches without it,
    bit for bit (the picks have a generator of their own); every real image is one or the other."""
    from data_pipeline.loading.augment import AsStored
    from exemplars.codecs.lowres import Lowres, LowresSettings

    codec = Lowres(LowresSettings(factor=2, encoding="pixels"))
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    ex = torch.rand(10, 3, 8, 8, generator=g).half()
    labels, ex_labels = torch.arange(40), torch.arange(40, 50)

    def batches(as_stored):
        return list(PhaseBatches((real, labels), (ex, ex_labels), BatchPlan(16, 5),
                                 LoaderOutput("cifar", 8, as_stored=as_stored)).epoch(1))

    plain, shown = batches(None), batches(AsStored(share, codec.round_trip))
    stored = 0
    for (x0, y0), (x1, y1) in zip(plain, shown):
        assert torch.equal(y0, y1)
        is_real = y0 < 40
        assert torch.equal(x1[~is_real], x0[~is_real])
        trip = codec.round_trip(x0[is_real])
        same = (x1[is_real] == x0[is_real]).flatten(1).all(1)
        tripped = (x1[is_real] == trip).flatten(1).all(1)
        assert bool((same | tripped).all())
        stored += int((tripped & ~same).sum())
    assert stored == 0 if share == 0 else (stored == 40 if share == 1 else 0 < stored < 40)
    assert not torch.equal(codec.round_trip(plain[0][0]), plain[0][0])     # the round trip changes images here


def test_real_as_stored_is_validated_and_needs_a_codec_that_changes_images():
    from core.errors import UserError
    from trainer.config import load_config

    cfg = load_config(None, ["exemplars.codec=lowres", "exemplars.real_as_stored=0.5"])
    assert cfg.exemplars.real_as_stored == 0.5 and load_config(None, []).exemplars.real_as_stored == 0.0
    with pytest.raises(UserError, match="must be in \\[0, 1\\], got 1.5"):
        load_config(None, ["exemplars.codec=lowres", "exemplars.real_as_stored=1.5"])
    with pytest.raises(UserError, match="exemplars.codec=raw stores them as they are"):
        load_config(None, ["exemplars.real_as_stored=0.5"])
