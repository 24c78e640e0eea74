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
