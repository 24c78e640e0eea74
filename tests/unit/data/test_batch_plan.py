"""The epoch plan both loaders follow: exactly once per epoch, equal steps, exemplar share."""
import pytest
import torch

from core.ranks import DistInfo
from data_pipeline.loading.batch_plan import BatchPlan, epoch_plan, steps_per_epoch
from data_pipeline.loading.phase_batches import PhaseBatches
from data_pipeline.loading.settings import LoaderOutput


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n_real,n_ex,batch,share", [(50, 7, 8, 0.25), (13, 40, 4, 0.5), (64, 3, 20, 0.1),
                                                     (31, 9, 10, 0.9)])
def test_share_mode_real_once_exemplars_balanced_equal_steps(world, n_real, n_ex, batch, share):
    for epoch in range(2):
        real, ex, steps = [], [], set()
        for rank in range(world):
            plan = epoch_plan(n_real, n_ex, batch, DistInfo(rank, world), seed=5, epoch=epoch,
                              exemplar_share=share)
            assert len(plan) == steps_per_epoch(n_real, n_ex, batch, world, share)
            steps.add(len(plan))
            for r, e in plan:
                assert len(r) + len(e) > 0
                real += r.tolist()
                ex += e.tolist()
        assert len(steps) == 1
        assert sorted(real) == list(range(n_real))
        n_ex_b = min(batch - 1, max(1, round(share * batch)))
        assert len(ex) == steps.pop() * n_ex_b                  # the share of every global batch
        counts = torch.bincount(torch.tensor(ex), minlength=n_ex)
        assert counts.max() - counts.min() <= 1


def test_default_plan_is_the_union_and_matches_phase_batches():
    ex = torch.zeros(6, 3, 4, 4)
    real = torch.zeros(20, 3, 4, 4, dtype=torch.uint8)
    pb = PhaseBatches((real, torch.arange(20)), (ex, torch.arange(20, 26)), BatchPlan(8, 3, DistInfo(1, 2)),
                      LoaderOutput("glyphs", 4), augment=False)
    plan = epoch_plan(20, 6, 8, DistInfo(1, 2), seed=3, epoch=2)
    assert [y.tolist() for _, y in pb.epoch(2)] == [torch.cat([r, e + 20]).tolist() for r, e in plan]


def test_phase_batches_share_mode():
    ex = torch.zeros(4, 3, 4, 4)
    real = torch.zeros(30, 3, 4, 4, dtype=torch.uint8)
    pb = PhaseBatches((real, torch.arange(30)), (ex, torch.arange(30, 34)), BatchPlan(10, 0, exemplar_share=0.2),
                      LoaderOutput("glyphs", 4), augment=False)
    ys = [y for _, y in pb.epoch(0)]
    assert len(ys) == pb.steps_per_epoch == 4                 # 30 real / 8 per batch
    assert all(int((y >= 30).sum()) == 2 for y in ys)
    assert sorted(torch.cat(ys)[torch.cat(ys) < 30].tolist()) == list(range(30))


def test_exemplar_share_config_key_is_validated():
    from core.errors import UserError
    from trainer.config import load_config

    assert load_config(None, ["data.exemplar_share=0.3"]).data.exemplar_share == 0.3
    assert load_config(None, []).data.exemplar_share is None
    with pytest.raises(UserError, match="data.exemplar_share"):
        load_config(None, ["data.exemplar_share=1.5"])


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n_real,n_ex,batch", [(1665, 0, 128), (331, 90, 128), (17, 4, 4), (5, 0, 4)])
def test_even_batches_differ_by_one_and_cover_the_epoch_once(world, n_real, n_ex, batch):
    sizes, seen = [], []
    for rank in range(world):
        plan = epoch_plan(n_real, n_ex, batch, DistInfo(rank, world), seed=1, epoch=0)
        assert len(plan) == steps_per_epoch(n_real, n_ex, batch, world)
        for s, (r, e) in enumerate(plan):
            if rank == 0:
                sizes.append(0)
            sizes[s] += len(r) + len(e)
            assert len(r) + len(e) > 0                           # every rank has a sample at every step
            seen += r.tolist() + (e + n_real).tolist()
    assert sorted(seen) == list(range(n_real + n_ex))
    assert max(sizes) - min(sizes) <= 1 and max(sizes) < batch + world   # one batch over the limit only if
    # joining is the only way to give every rank a sample (5 samples, batch 4, 3 ranks: one batch of 5)


def test_short_last_batch_is_the_plan_before_even_batches():
    """1665 base images at batch 128: `short` keeps a last batch of one image (as every run before the key),
    `even` cuts 14 batches of 118-119."""
    short = epoch_plan(1665, 0, 128, DistInfo(0, 1), seed=0, epoch=0, last_batch="short")
    even = epoch_plan(1665, 0, 128, DistInfo(0, 1), seed=0, epoch=0)
    assert [len(r) for r, _ in short] == [128] * 13 + [1]
    assert sorted({len(r) for r, _ in even}) == [118, 119] and len(even) == 14
    assert torch.equal(torch.cat([r for r, _ in short]), torch.cat([r for r, _ in even]))   # one permutation
    # a one-sample tail still joins the batch before it when it cannot give every rank a sample
    tail = epoch_plan(9, 0, 4, DistInfo(0, 2), seed=0, epoch=0, last_batch="short")
    assert [len(r) + len(e) for r, e in tail] == [2, 3]


def test_last_batch_config_key():
    from core.errors import UserError
    from trainer.config import load_config, stored_defaults

    assert load_config(None).train.last_batch == "even"
    assert load_config("configs/glyphs.yaml").train.last_batch == "short"    # what every recorded glyph figure used
    assert stored_defaults()["train"]["last_batch"] == "short"               # a config.yaml written before the key
    with pytest.raises(UserError, match="train.last_batch"):
        load_config(None, ["train.last_batch=drop"])
