"""The paper's exemplar optimisation: the unrolled inner loop (exemplars/unroll.py), the unrolled objective
(objectives/unrolled.py), the fold adjustment of Eq. 10 (adjustments/folds.py), their settings, and rank sharding
(sharding.py).

A tiny conv net with BatchNorm stands in for the classifier; double precision where a comparison
needs it. Proves: the pixel gradient flows through the unrolled steps (finite differences), the
meta-loss goes down, checkpointed == plain unrolling, the model is left untouched, determinism,
and the fold logic of Eq. 10.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from exemplars.adjustments.folds import FoldSettings, Folds, fold_ids
from exemplars.objectives.unrolled import Unrolled, UnrolledSettings
from exemplars.pixel_descent import Schedule
from exemplars.selections.optimised import OptimisedShared, optimised_settings_type, paper_settings
from exemplars.sharding import assign_groups, class_groups
from exemplars.unroll import InnerLoop, unroll, unrolled_meta_loss, validation_loss

N_CLASSES = 3
pytestmark = pytest.mark.usefixtures("one_thread")


def unrolled(**inner) -> Unrolled:
    return Unrolled(UnrolledSettings(**inner))


def schedule(epochs: int, lr: float, halve_every: int = 10, steps_per_epoch: int = 1) -> Schedule:
    """Eq. 9's outer loop: `epochs` of `steps_per_epoch` steps on one real batch each, plain SGD at `lr`."""
    return Schedule(epochs, steps_per_epoch, 1, lr, halve_every)


PAPER_LOOP = dict(epochs=50, steps_per_epoch=1, lr_halve_every=10)     # Eq. 9's outer loop in the paper


def make_folds(inner: dict | None = None, shared: dict | None = None, **fold) -> Folds:
    """Eq. 10 with the unrolled objective's `inner` settings, exemplars.optimised's `shared` keys and its own."""
    mnemonics = optimised_settings_type()(unrolled=UnrolledSettings(**(inner or {})), **(shared or {}))
    return Folds(FoldSettings(**fold), SimpleNamespace(optimised=mnemonics))


def tiny_net(dtype=torch.float64, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Dropout(0.5),  # must be inactive inside Θ' (would draw on the global RNG otherwise)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, N_CLASSES),
    ).to(dtype)


def class_images(n_per_class: int, seed: int, dtype=torch.float64, size: int = 8):
    """A learnable toy set: class c is a bright blob in channel c on a noisy background."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N_CLASSES).repeat_interleave(n_per_class)
    x = 0.3 * torch.rand(len(y), 3, size, size, generator=g, dtype=dtype)
    for i, c in enumerate(y.tolist()):
        x[i, c, 2:6, 2:6] += 0.6
    return x.clamp(0, 1), y


def start_state(model):
    params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


def pixel_grad(model, ex_x, ex_y, val_x, val_y, steps, lr, checkpoint, val_bn="batch",
               segment=0, inner_bn="batch"):
    x = ex_x.clone().requires_grad_()
    loss = unrolled_meta_loss(model, start_state(model), x, ex_y, (val_x, val_y),
                              InnerLoop(steps, lr, checkpoint, segment, inner_bn), val_bn)
    (g,) = torch.autograd.grad(loss, x)
    return g


@pytest.mark.parametrize("val_bn,inner_bn", [("batch", "batch"), ("running", "batch"),
                                             ("running", "running")])
def test_pixel_gradient_matches_finite_differences(val_bn, inner_bn):
    model = tiny_net()
    if inner_bn == "running":   # non-trivial running statistics, so frozen BN is not an identity
        with torch.no_grad():
            model.train()(class_images(6, seed=4)[0])
        model.eval()
    ex_x, ex_y = class_images(2, seed=1)
    val_x, val_y = class_images(4, seed=2)
    steps, lr = 3, 0.5  # large α2 so the unrolled steps matter
    g = pixel_grad(model, ex_x, ex_y, val_x, val_y, steps, lr, checkpoint=True, val_bn=val_bn,
                   inner_bn=inner_bn)
    assert g.abs().sum() > 0

    def f(x):
        return unrolled_meta_loss(model, start_state(model), x, ex_y, (val_x, val_y),
                                  InnerLoop(steps, lr, False, bn=inner_bn), val_bn).item()

    gen = torch.Generator().manual_seed(3)
    eps = 1e-6
    directions = [torch.randn(ex_x.shape, generator=gen, dtype=ex_x.dtype) for _ in range(2)]
    for _ in range(3):  # single pixel coordinates
        d = torch.zeros_like(ex_x).flatten()
        d[torch.randint(d.numel(), (1,), generator=gen)] = 1.0
        directions.append(d.view_as(ex_x))
    for d in directions:
        fd = (f(ex_x + eps * d) - f(ex_x - eps * d)) / (2 * eps)
        an = (g * d).sum().item()
        assert an == pytest.approx(fd, rel=1e-4, abs=1e-8), (an, fd)


def test_gradient_needs_the_unrolled_steps():
    # With T=0, Θ' = Θ does not depend on the exemplars: the pixel gradient is exactly zero.
    model = tiny_net()
    ex_x, ex_y = class_images(2, seed=1)
    val_x, val_y = class_images(4, seed=2)
    x = ex_x.clone().requires_grad_()
    loss = unrolled_meta_loss(model, start_state(model), x, ex_y, (val_x, val_y), InnerLoop(0, 0.5, True))
    (g,) = torch.autograd.grad(loss, x, allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(g) == 0
    assert pixel_grad(model, ex_x, ex_y, val_x, val_y, 1, 0.5, True).abs().sum() > 0


@pytest.mark.parametrize("segment", [1, 0, 4])  # per-step; two-level auto (3+3); uneven (4+2)
def test_checkpointed_equals_plain_unrolling(segment):
    model = tiny_net(torch.float32)
    ex_x, ex_y = class_images(3, seed=4, dtype=torch.float32)
    val_x, val_y = class_images(5, seed=5, dtype=torch.float32)
    plain = pixel_grad(model, ex_x, ex_y, val_x, val_y, 6, 0.3, checkpoint=False)
    ckpt = pixel_grad(model, ex_x, ex_y, val_x, val_y, 6, 0.3, checkpoint=True, segment=segment)
    rel = (plain - ckpt).norm() / plain.norm()
    assert rel < 1e-5, rel


def test_frozen_parameters_stay_fixed_and_gradient_still_flows():
    model = tiny_net()
    ex_x, ex_y = class_images(2, seed=1)
    params, buffers = start_state(model)
    params["0.weight"] = params["0.weight"].detach()  # frozen first conv
    x = ex_x.clone().requires_grad_()
    theta = unroll(model, (params, buffers), x, ex_y, InnerLoop(steps=4, lr=0.5, checkpoint=True))
    assert theta["0.weight"] is params["0.weight"]
    assert not torch.equal(theta["9.weight"], params["9.weight"])
    (g,) = torch.autograd.grad(sum(t.sum() for t in theta.values()), x)
    assert g.abs().sum() > 0


def test_sync_batchnorm_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.SyncBatchNorm(2), nn.Flatten(),
                          nn.Linear(2 * 6 * 6, N_CLASSES)).double()
    ex_x, ex_y = class_images(2, seed=1)
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        unrolled(inner_steps=1).optimise(model, ex_x, ex_y, lambda e: [(ex_x, ex_y)], schedule(1, 0.01))


def test_meta_loss_decreases():
    model = tiny_net()
    ex_x, ex_y = class_images(2, seed=6)
    ex_x = torch.rand(ex_x.shape, generator=torch.Generator().manual_seed(7), dtype=ex_x.dtype)
    val_x, val_y = class_images(8, seed=8)
    losses = []
    out = unrolled(inner_steps=3, inner_lr=0.5, checkpoint=True).optimise(
        model, ex_x, ex_y, lambda epoch: [(val_x, val_y)], schedule(12, 20.0, halve_every=100),
        progress=lambda info: losses.append(info["loss"]))
    assert len(losses) == 12

    def meta(x):
        return unrolled_meta_loss(model, start_state(model), x, ex_y, (val_x, val_y), InnerLoop(3, 0.5)).item()

    before, after = meta(ex_x), meta(out)
    assert after < 0.9 * before, (before, after, losses)
    assert losses[-1] < losses[0]
    assert out.min() >= 0 and out.max() <= 1


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}, \
        [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_untouched(model, snap, training):
    state, grads = snap
    for k, v in model.state_dict().items():  # weights, running_mean/var, num_batches_tracked
        assert torch.equal(v, state[k]), k
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert all(m.training == training for m in model.modules())


@pytest.mark.parametrize("training", [True, False])
def test_model_is_left_untouched(training):
    model = tiny_net()
    # warm the BN statistics and give some parameters a .grad, the rest none
    with torch.no_grad():
        model.train()(class_images(4, seed=9)[0])
    for p in list(model.parameters())[:3]:
        p.grad = torch.randn_like(p)
    model.train(training)
    snap = snapshot(model)
    rng = torch.get_rng_state()
    ex_x, ex_y = class_images(2, seed=10)
    val_x, val_y = class_images(3, seed=11)
    for ck in (True, False):
        inner = dict(inner_steps=2, inner_lr=0.1, checkpoint=ck)
        Unrolled(UnrolledSettings(**inner)).optimise(model, ex_x, ex_y, lambda e: [(val_x, val_y)], schedule(2, 1.0))
        assert_untouched(model, snap, training)
        make_folds(inner, epochs=2).adjust_tensors(model, ex_x, ex_y)
        assert_untouched(model, snap, training)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is never drawn from


def test_deterministic_given_generator():
    model = tiny_net()
    ex_x, ex_y = class_images(4, seed=12)
    inner = dict(inner_steps=2, inner_lr=0.3, inner_batch_size=6)
    folds = make_folds(inner, dict(val_batch_size=4), k=2, epochs=3, steps_per_epoch=0)
    outs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)  # must not matter
        gen = torch.Generator().manual_seed(42)
        adj = folds.adjust_tensors(model, ex_x, ex_y, generator=gen)
        gen = torch.Generator().manual_seed(42)
        val = class_images(3, seed=13)
        opt = unrolled(**inner).optimise(model, ex_x, ex_y, lambda e: [val], schedule(3, 5.0, steps_per_epoch=0),
                                         generator=gen)
        outs.append((adj, opt))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    other = folds.adjust_tensors(model, ex_x, ex_y, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(other, outs[0][0])  # the generator does drive the fold split


def test_adjust_changes_every_fold_and_keeps_order():
    model = tiny_net()
    ex_x, ex_y = class_images(6, seed=14)
    folds = make_folds(dict(inner_steps=2, inner_lr=0.3), dict(val_batch_size=8), k=3, lr=2.0, epochs=2)
    out = folds.adjust_tensors(model, ex_x, ex_y, generator=torch.Generator().manual_seed(1))
    assert out.shape == ex_x.shape and out.dtype == ex_x.dtype and out.device == ex_x.device
    assert out.min() >= 0 and out.max() <= 1
    ids = fold_ids(ex_y, 3, torch.Generator().manual_seed(1))  # the split adjust_exemplars used
    for f in range(3):
        fold = ids == f
        assert fold.sum() == 6  # 2 per class per fold
        assert torch.bincount(ex_y[fold], minlength=N_CLASSES).tolist() == [2, 2, 2]
        changed = (out[fold] - ex_x[fold]).flatten(1).abs().amax(1)
        assert (changed > 0).all(), f"fold {f} has unchanged exemplars"
    # order: every adjusted exemplar is still nearest to its own original
    dist = torch.cdist(out.flatten(1), ex_x.flatten(1))
    assert torch.equal(dist.argmin(1), torch.arange(len(ex_x)))


def test_adjustment_through_a_low_resolution_memory_adjusts_the_stored_pixels():
    """With `lowres` Eq. 10 moves each fold's stored tensor through the decode: every adjusted exemplar is one the
    memory keeps as it is (storing it again changes nothing but the rounding to 8-bit levels), and it moved."""
    from exemplars.codecs.lowres import Lowres, LowresSettings
    model = tiny_net()
    ex_x, ex_y = class_images(4, seed=14)
    codec = Lowres(LowresSettings(factor=2, encoding="pixels"))
    start = codec.decode(codec.store(ex_x), 8).double()
    folds = make_folds(dict(inner_steps=2, inner_lr=0.3), dict(val_batch_size=8), k=2, lr=2.0, epochs=2)
    out = folds.adjust_tensors(model, start, ex_y, generator=torch.Generator().manual_seed(1), codec=codec)
    assert out.shape == ex_x.shape
    assert torch.allclose(codec.decode(codec.store(out), 8).double(), out, atol=1 / 255)
    assert (out - start).abs().amax() > 1e-3
    plain = folds.adjust_tensors(model, start, ex_y, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(codec.decode(codec.store(plain), 8).double(), plain, atol=1 / 255)


def test_adjustment_has_its_own_momentum():
    """Eq. 10 runs with exemplars.folds.momentum, never with the new exemplars' exemplars.optimised.momentum: the
    new objectives' momentum 0.9 leaves a default adjustment exactly the paper's plain SGD, and its own changes it."""
    model = tiny_net()
    ex_x, ex_y = class_images(4, seed=14)

    def adjusted(shared_momentum=0.0, **fold):
        folds = make_folds(dict(inner_steps=2, inner_lr=0.3), dict(val_batch_size=8, momentum=shared_momentum),
                           lr=2.0, epochs=3, **fold)
        return folds.adjust_tensors(model, ex_x, ex_y, generator=torch.Generator().manual_seed(1))

    plain = adjusted()
    assert not torch.equal(plain, ex_x)
    assert torch.equal(adjusted(shared_momentum=0.9), plain)
    heavy = adjusted(momentum=0.9)
    assert (heavy - ex_x).abs().sum() > 1.5 * (plain - ex_x).abs().sum()
    with pytest.raises(ValueError, match="momentum"):
        FoldSettings(momentum=1.0)


def test_adjustment_has_its_own_outer_loop():
    """Eq. 10 runs exemplars.folds.epochs x steps_per_epoch outer steps, not the new exemplars' loop; a key left
    None takes exemplars.optimised's value (what runs written before Eq. 10 had a loop of its own did)."""
    model = tiny_net()
    ex_x, ex_y = class_images(4, seed=14)
    steps = []
    inherit = dict(epochs=None, steps_per_epoch=None, lr_halve_every=None)

    def count(shared: dict, **fold):
        steps.clear()
        folds = make_folds(dict(inner_steps=1, inner_lr=0.3), {**PAPER_LOOP, "val_batch_size": 8, **shared},
                           lr=2.0, **{**inherit, **fold})
        out = folds.adjust_tensors(model, ex_x, ex_y, progress=steps.append, generator=torch.Generator().manual_seed(1))
        return len(steps) // 2, out                               # two folds

    assert count(dict(epochs=3, steps_per_epoch=2))[0] == 3      # inherited: 3 epochs (a fold's complement is a batch)
    n, shared = count(dict(epochs=3, steps_per_epoch=1))
    assert n == 3
    n, own = count(dict(epochs=9, steps_per_epoch=4), epochs=3, steps_per_epoch=1, lr_halve_every=10)
    assert n == 3 and torch.equal(own, shared)                   # the same loop, whatever Eq. 9's
    assert count({}, epochs=2, steps_per_epoch=1)[0] == 2


def test_settings_are_plain_and_validated():
    s = optimised_settings_type()()
    for section in (s, s.unrolled, FoldSettings()):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            assert dataclasses.is_dataclass(value) or type(value) in (int, float, bool, str), f.name
    # the recommended objective and its validated outer loop (docs/results.md); Eq. 10 the paper's
    assert (s.objective, s.lr, s.init, s.momentum, s.augment, s.epochs, s.steps_per_epoch, s.lr_halve_every) == \
        ("prototype", 0.5, "herding", 0.9, True, 10, 5, 4)
    f = FoldSettings()
    assert (s.unrolled.inner_lr, f.lr, f.momentum, f.augment, f.k) == (0.01, 0.01, 0.0, False, 2)
    assert (f.epochs, f.steps_per_epoch, f.lr_halve_every) == (50, 1, 10)
    p = paper_settings()
    assert (p.objective, p.unrolled.inner_steps, p.unrolled.inner_lr, p.epochs, p.lr, p.lr_halve_every,
            p.steps_per_epoch) == ("unrolled", 50, 0.01, 50, 0.01, 10, 1)   # Section 5.1's values
    assert isinstance(p, OptimisedShared)
    with pytest.raises(ValueError, match="epochs"):
        FoldSettings(epochs=-1)
    with pytest.raises(ValueError, match="lr_halve_every"):
        FoldSettings(lr_halve_every=0)
    with pytest.raises(ValueError):
        FoldSettings(k=1)
    with pytest.raises(ValueError):
        UnrolledSettings(val_bn="eval")
    with pytest.raises(ValueError, match="inner_bn"):
        UnrolledSettings(inner_bn="frozen")
    with pytest.raises(ValueError, match="objective"):
        optimised_settings_type()(objective="bilevel")


def test_group_meta_loss_ignores_a_shift_towards_the_group():
    """meta_loss=group: the cross-entropy over the exemplars' classes only. Raising those classes'
    logits together (a bias towards the group) lowers the all-class meta-loss of Θ' but leaves the
    group loss unchanged (T = 0 here: the inner steps' trajectory itself depends on the bias)."""
    model = tiny_net()
    ex_x, ex_y = class_images(2, seed=1)
    keep = ex_y < 2                                   # a group of classes 0 and 1 out of 3
    ex_x, ex_y = ex_x[keep], ex_y[keep]
    val_x, val_y = class_images(4, seed=2)
    val = [(val_x[val_y < 2], val_y[val_y < 2])]
    objectives = {m: unrolled(inner_steps=0, meta_loss=m) for m in ("all", "group")}
    before = {m: o.meta_loss_value(model, ex_x, ex_y, val) for m, o in objectives.items()}
    with torch.no_grad():
        model[-1].bias[:2] += 3.0
    after = {m: o.meta_loss_value(model, ex_x, ex_y, val) for m, o in objectives.items()}
    assert after["all"] < before["all"] - 0.1
    assert after["group"] == pytest.approx(before["group"], abs=1e-9)
    with pytest.raises(ValueError, match="meta_loss"):
        UnrolledSettings(meta_loss="within")


def test_group_meta_loss_in_adjustment_with_a_fold_missing_a_class():
    """Eq. 10 with meta_loss=group and 3 folds of a class with 2 exemplars: one fold lacks that class
    while its complement has it, so the meta-loss ranges over the whole group's classes."""
    model = tiny_net()
    x, y = class_images(2, seed=1)                 # 3 classes x 2 exemplars, folds=3
    folds = make_folds(dict(inner_steps=2, inner_lr=0.5, meta_loss="group"), k=3, lr=1.0, epochs=2)
    out = folds.adjust_tensors(model, x, y)
    assert out.shape == x.shape and not torch.equal(out, x)
    with pytest.raises(ValueError, match="outside"):
        validation_loss(model, *start_state(model), [(x, y)], classes=torch.tensor([0, 1]))


def test_frozen_bn_theta_prime_starts_as_theta():
    """inner_bn = val_bn = running: with T = 0 the meta-loss is Θ's own eval-mode loss, and the
    inner steps neither read nor write batch statistics (BN buffers unchanged, loss differs from
    the batch-statistics regime)."""
    model = tiny_net()
    with torch.no_grad():
        model.train()(class_images(6, seed=4)[0])
    model.eval()
    ex_x, ex_y = class_images(2, seed=1)
    val_x, val_y = class_images(4, seed=2)
    before = {n: b.clone() for n, b in model.named_buffers()}
    start = start_state(model)
    at0 = unrolled_meta_loss(model, start, ex_x, ex_y, (val_x, val_y), InnerLoop(0, 0.5, False, bn="running"),
                             "running")
    with torch.no_grad():
        own = nn.functional.cross_entropy(model(val_x), val_y)
    assert at0.item() == pytest.approx(own.item(), rel=1e-12)
    frozen, batch = (unrolled_meta_loss(model, start, ex_x, ex_y, (val_x, val_y), InnerLoop(3, 0.5, False, bn=bn),
                                        "running").item()
                     for bn in ("running", "batch"))
    assert frozen != pytest.approx(batch, rel=1e-6)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n


# ------------------------------------------------------------------------------------ sharding

def test_class_groups_follow_protocol_order():
    order = [7, 3, 9, 1, 4, 8, 2]
    assert class_groups(order, 3) == [[7, 3, 9], [1, 4, 8], [2]]
    assert class_groups(order, 10) == [order]
    assert class_groups([], 2) == []
    with pytest.raises(ValueError):
        class_groups(order, 0)


def test_assign_groups_lpt_balanced_and_deterministic():
    groups = [[0], [1], [2], [3], [4], [5]]
    costs = [5.0, 4.0, 3.0, 3.0, 2.0, 1.0]
    # LPT: g0(5)->r0, g1(4)->r1, g2(3)->r2, g3(3)->r2 (least loaded), g4(2)->r1, g5(1)->r0
    assignment = assign_groups(groups, costs, 3)
    assert assignment == [[0, 5], [1, 4], [2, 3]]
    loads = [sum(costs[i] for i in r) for r in assignment]
    assert max(loads) - min(loads) <= max(costs)
    assert sorted(i for r in assignment for i in r) == list(range(6))
    assert assign_groups(groups, costs, 3) == assignment
    # ties are broken by group index then rank; more ranks than groups leaves ranks empty
    assert assign_groups([[0], [1]], [1.0, 1.0], 3) == [[0], [1], []]
    # default cost = group size
    assert assign_groups([[0, 1, 2], [3], [4, 5]], None, 2) == [[0], [1, 2]]
    with pytest.raises(ValueError):
        assign_groups(groups, costs[:2], 2)
    with pytest.raises(ValueError):
        assign_groups(groups, costs, 0)


def test_groups_do_not_depend_on_world_size():
    order = list(range(20))
    groups = class_groups(order, 4)
    for world in (1, 2, 3, 8):
        assignment = assign_groups(groups, None, world)
        assert len(assignment) == world
        assert sorted(i for r in assignment for i in r) == list(range(len(groups)))
        assert class_groups(order, 4) == groups


def test_profile_reports_the_exemplar_share_of_each_phase(tmp_path, capsys):
    import json

    from benchmarks.mnemonics_profile import main

    phases = [{"phase": 0, "wall_s": 100.0, "split_s": {"train": 80.0, "exemplars": 20.0}},
              {"phase": 1, "wall_s": 50.0, "split_s": {"train": 20.0, "exemplars": 25.0, "eval": 5.0}}]
    (tmp_path / "profile.json").write_text(json.dumps({"phases": phases}))
    main(["--share-only", "--run", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    share = out["phase_share"][0]
    assert [p["share"] for p in share["phases"]] == [0.2, 0.5] and share["share_all_phases"] == 0.3


# ---- the paper's method in its form (selections/mnemonics.py) ----

def test_paper_form_trains_one_temporary_model_on_all_the_phases_classes():
    """selection=mnemonics optimises all of a phase's classes with one Θ' (and Eq. 10 adjusts all old exemplars
    jointly); its own group_size splits them, for ranks. The optimised selection keeps exemplars.group_size."""
    from exemplars.selections.mnemonics import Mnemonics, MnemonicsSettings
    classes = list(range(10, 23))
    assert Mnemonics().groups(classes, 6) == [classes]
    assert Mnemonics(MnemonicsSettings(group_size=5)).groups(classes, 6) == [classes[:5], classes[5:10], classes[10:]]
    from exemplars.selections.optimised import Optimised
    assert Optimised().groups(classes, 6) == class_groups(classes, 6)
    s = MnemonicsSettings()
    assert (s.epochs, s.steps_per_epoch, s.lr, s.lr_halve_every, s.unrolled.inner_steps) == (50, 0, 0.01, 10, 50)
    assert (s.objective, s.init, s.momentum, s.augment) == ("unrolled", "random", 0.0, False)


def test_paper_units_scale_the_rate_by_the_normalisation_variance():
    """A rate in the paper's units (on normalised pixels) moves the [0, 1] pixels by β·σ²·grad: with the glyph
    preset's σ = 0.5 the descent equals one at β/4 in pixel units, bit for bit; Eq. 10 under selection=mnemonics
    takes the same units, under herding the pixel units it always had."""
    from exemplars.pixel_descent import descend, paper_units
    from exemplars.selections.mnemonics import Mnemonics, MnemonicsSettings
    from trainer.methods.models.net import IncrementalNet
    model = IncrementalNet("resnet20", "glyphs")
    assert paper_units(model) == (0.25, 0.25, 0.25)
    assert Mnemonics().schedule(model).rate_scale == (0.25, 0.25, 0.25)
    assert Mnemonics(MnemonicsSettings(units="pixels")).schedule(model).rate_scale is None
    with pytest.raises(ValueError, match="no `normalize` module"):
        paper_units(tiny_net())
    net, (x0, y), real = tiny_net(torch.float32), class_images(2, 0, torch.float32), class_images(4, 1, torch.float32)
    loss_of = unrolled(inner_steps=2, inner_lr=0.1).loss_of(net, y, torch.Generator(), None)
    records = []
    paper = descend(x0, loss_of, lambda e: [real], dataclasses.replace(schedule(3, 0.8), rate_scale=(0.25,) * 3),
                    records.append)
    pixels = descend(x0, loss_of, lambda e: [real], schedule(3, 0.2))
    assert torch.equal(paper, pixels) and not torch.equal(paper, x0)
    assert [(r["epoch"], r["step"]) for r in records] == [(0, 0), (1, 0), (2, 0)]   # progress names the step
    mn = MnemonicsSettings(unrolled=UnrolledSettings(inner_steps=3))
    ex = SimpleNamespace(selection="mnemonics", mnemonics=mn, optimised=optimised_settings_type()(),
                         folds=FoldSettings())
    folds = Folds(FoldSettings(), ex)
    assert folds.section is mn and folds.schedule(model).rate_scale == (0.25,) * 3
    assert "exemplars.mnemonics.unrolled" in Folds.keys_read(ex) and "exemplars.mnemonics.units" in Folds.keys_read(ex)
    ex.selection = "herding"
    herding = Folds(FoldSettings(), ex)
    assert herding.section is ex.optimised and herding.schedule(model).rate_scale is None
