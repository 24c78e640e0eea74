import pytest
import torch

from data_pipeline.loading.phase_batches import PhaseBatches


def _batches(n_real, n_ex, batch, rank, world):
    real = torch.arange(n_real, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    ex = torch.zeros(n_ex, 3, 4, 4)
    return PhaseBatches(real, torch.arange(n_real), ex, torch.arange(n_real, n_real + n_ex), batch, rank, world,
                        seed=3, preset="glyphs", image_size=4, augment=False)


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
