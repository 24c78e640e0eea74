"""The exemplar objectives other than the unrolled one (exemplars/objectives/), the shared pixel descent
(exemplars/pixel_descent.py) and the optimised selection that runs them."""
import pytest
import torch

from exemplars.adjustments.base import build_adjustment
from exemplars.features import class_means
from exemplars.objectives.base import GroupTask
from exemplars.objectives.embedders import redraw
from exemplars.objectives.gradient_matching import gradient_matching_loss, layer_distance
from exemplars.objectives.matching import MatchingSettings, matching_loss
from exemplars.objectives.prototype import PrototypeSettings, prototype_loss
from exemplars.objectives.unrolled import Unrolled, UnrolledSettings
from exemplars.pixel_descent import Schedule, descend, tensor_batches
from exemplars.selections.base import SelectionContext
from exemplars.selections.optimised import optimised_settings_type
from exemplars.unroll import previous_params
from exemplars.update import build_selection
from trainer.config import load_config
from trainer.methods.models.net import IncrementalNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(classes=4, seed=0):
    torch.manual_seed(seed)
    model = IncrementalNet("resnet20", "glyphs")
    model.head.grow(classes)
    return model.eval()


def _images(n_per_class, classes, seed=0, side=8):
    """Class c: a bright square at a class-specific place on noise (learnable, and far from any start)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.rand((len(y), 3, side, side), generator=g) * 0.3
    for c in range(classes):
        r, col = divmod(c, 2)
        x[y == c, :, r * 4: r * 4 + 3, col * 4: col * 4 + 3] += 0.7
    return x.clamp(0, 1), y


def _value(loss_of, x, real):
    with torch.no_grad():
        return float(loss_of(x, real))


def _descend(loss_of, x0, real, lr, epochs=8, momentum=0.0):
    return descend(x0, loss_of, lambda e: iter(real), Schedule(epochs, 1, len(real), lr, 100, momentum))


def test_prototype_objective_lowers_its_loss_and_sees_the_old_classes():
    model = _net(4)
    x_real, y_real = _images(10, 4, seed=1)
    old = {0: x_real[y_real == 0][:3], 1: x_real[y_real == 1][:3]}
    means = class_means(model, old, [0, 1], torch.device("cpu"), False)
    x0, y = _images(3, 4, seed=2)
    x0, y = x0[y >= 2], y[y >= 2]                     # the group: classes 2, 3; classes 0, 1 are old
    real = [(x_real, y_real)]
    loss_of = prototype_loss(model, y, means, [0, 1], 16.0)
    x = _descend(loss_of, x0, real, lr=8.0, momentum=0.5)
    assert _value(loss_of, x, real) < 0.95 * _value(loss_of, x0, real)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    # the old classes' columns are part of the classifier: a real label outside group and old fails
    with pytest.raises((IndexError, RuntimeError)):
        loss_of(x0, [(x_real[:2], torch.tensor([5, 5]))])
    no_old = prototype_loss(model, y, None, [], 16.0)
    assert _value(no_old, x0, [(x_real[y_real >= 2], y_real[y_real >= 2])]) > 0


def _with_fixed_draws(make_loss):
    """A two-class toy case for an objective with fresh embedders, their draws held fixed (the generator
    reseeded before every step): (model, loss_of, starting exemplars, real batches)."""
    model = _net(2)
    x_real, y_real = _images(12, 2, seed=1)
    x0, y = _images(3, 2, seed=3)
    g = torch.Generator()
    inner = make_loss(model, y, g)

    def loss_of(x, batches):
        g.manual_seed(0)
        return inner(x, batches)
    return model, loss_of, x0, [(x_real, y_real)]


@pytest.mark.parametrize("embedders", ["current", "random", "both"])
def test_matching_objective_lowers_its_loss(embedders):
    """The descent lowers the matching loss under every choice of embedders."""
    _, loss_of, x0, real = _with_fixed_draws(lambda model, y, g: matching_loss(model, y, embedders, g))
    x = _descend(loss_of, x0, real, lr=0.5, epochs=10)
    assert _value(loss_of, x, real) < 0.6 * _value(loss_of, x0, real)


@pytest.mark.parametrize("embedders,lr,ratio", [("current", 3.0, 0.85), ("random", 0.1, 0.97)])
def test_gradient_matching_lowers_its_loss(embedders, lr, ratio):
    """Gradient matching under Θ and under one fixed fresh draw: the descent lowers the layer-wise 1 - cos
    between the gradients on the real images and on the exemplars, class by class (a fresh network's
    gradients turn ~50x faster with the pixels than Θ's, hence its smaller rate; its loss is rougher)."""
    model, loss_of, x0, real = _with_fixed_draws(
        lambda model, y, g: gradient_matching_loss(model, y, embedders, g))
    x = _descend(loss_of, x0, real, lr=lr, epochs=10, momentum=0.5)
    start = _value(loss_of, x0, real)
    assert 0 < _value(loss_of, x, real) < ratio * start and start <= 2 * 2      # two classes, each term in [0, 2]
    assert all(p.grad is None for p in model.parameters())          # Θ itself is untouched


def test_gradient_matching_pixel_gradient_matches_finite_differences():
    """The pixels' gradient passes through the exemplars' weight gradient (second order): in float64, along
    a random direction, it equals the central difference of the loss. (The weight gradient of a ReLU network
    jumps where a unit switches on or off, so the difference is taken closer than the nearest switch: at
    1e-5 it already crosses one here.)"""
    model = _net(2).double()
    x_real, y_real = _images(4, 2, seed=1)
    x0, y = _images(2, 2, seed=3)
    loss_of = gradient_matching_loss(model, y, "current", torch.Generator())
    real = [(x_real.double(), y_real)]
    x = (x0.double() * 0.8 + 0.1).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of(x, real), x)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for eps in (1e-6, 1e-7):
        with torch.no_grad():
            fd = (loss_of(x + eps * v, real) - loss_of(x - eps * v, real)) / (2 * eps)
        assert float(grad.flatten() @ v.flatten()) == pytest.approx(float(fd), rel=1e-5, abs=1e-8), eps
    assert float(grad.abs().max()) > 0


def test_layer_distance_compares_each_output_unit_on_its_own():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(layer_distance(a, 3 * a)) == pytest.approx(0.0, abs=1e-6)     # scale does not count
    assert float(layer_distance(a, a.flip(0))) == pytest.approx(2.0)            # two orthogonal rows
    assert float(layer_distance(a, torch.stack([a[0], -a[1]]))) == pytest.approx(2.0)


def test_fresh_embedders_come_from_the_generator_only():
    a, b = _net(2), _net(2)
    rng = torch.get_rng_state()
    redraw(a, torch.Generator().manual_seed(5))
    redraw(b, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), rng)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pb) for pa, pb in zip(a.parameters(), _net(2).parameters()))


def test_momentum_and_anchor_of_the_pixel_descent():
    """A loss that pushes every pixel down: momentum goes further in the same steps; the anchor stops
    short of where the unanchored descent goes, and its pull is what the anchor weight says."""
    x0 = torch.full((1, 1, 2, 2), 0.8)
    loss_of = lambda x, real: x.sum()                                    # noqa: E731
    real = [(torch.zeros(1), torch.zeros(1))]
    plain = descend(x0, loss_of, lambda e: iter(real), Schedule(3, 1, 1, 0.05, 100))
    heavy = descend(x0, loss_of, lambda e: iter(real), Schedule(3, 1, 1, 0.05, 100, momentum=0.9))
    anchored = descend(x0, loss_of, lambda e: iter(real), Schedule(3, 1, 1, 0.05, 100, anchor=2.0))
    assert torch.allclose(plain, torch.full_like(x0, 0.65))
    assert (heavy < plain).all() and (anchored > plain).all()
    # anchored steps: x1 = 0.8 - 0.05; x2 = x1 - 0.05 (1 + 2 (x1 - 0.8)); x3 likewise
    x = 0.8
    for _ in range(3):
        x -= 0.05 * (1 + 2.0 * (x - 0.8))
    assert torch.allclose(anchored, torch.full_like(x0, x))


def test_descent_keeps_float16_steps_in_float32():
    """Steps far below float16's resolution still add up: the pixels are float32 inside the loop."""
    x0 = torch.full((1, 1, 1, 4), 0.75, dtype=torch.float16)
    out = descend(x0, lambda x, real: x.sum(), lambda e: iter([(torch.zeros(1), torch.zeros(1))] * 10),
                  Schedule(1, 0, 1, 1e-5, 100))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, 0.75 - 1e-4))


def _select(objective, extra=(), device_seed=0):
    cfg = load_config("configs/glyphs.yaml", ["data.image_size=8", "exemplars.selection=optimised",
                                              f"exemplars.optimised.objective={objective}",
                                              "exemplars.optimised.epochs=2", "exemplars.optimised.lr=0.5",
                                              "exemplars.optimised.val_batch_size=8", *extra])
    model = _net(4)
    x, y = _images(6, 4, seed=4)
    images = (x * 255).round().to(torch.uint8)
    old = {0: x[y == 0][:2].half(), 1: x[y == 1][:2].half()}
    ctx = SelectionContext(cfg.seed, 1, torch.device("cpu"), 16, "glyphs", old, previous=_net(2, seed=1))
    selection = build_selection(cfg.exemplars)
    out = selection.select(model, images[y >= 2], y[y >= 2], [2, 3], 3, ctx)
    return out, selection


@pytest.mark.parametrize("objective,extra", [
    ("prototype", ["exemplars.optimised.momentum=0.9", "exemplars.optimised.augment=true"]),
    ("matching", ["exemplars.optimised.matching.embedders=both", "exemplars.optimised.augment=true"]),
    ("matching", ["exemplars.optimised.matching.match=gradients", "exemplars.optimised.matching.embedders=both",
                  "exemplars.optimised.augment=true", "exemplars.optimised.lr=0.1"]),
    ("unrolled", ["exemplars.optimised.unrolled.inner_steps=1", "exemplars.optimised.augment=true"]),
    ("unrolled", ["exemplars.optimised.unrolled.inner_steps=1", "exemplars.optimised.unrolled.start=previous",
                  "exemplars.optimised.unrolled.meta_data=phase"]),
])
def test_selection_runs_each_objective_deterministically(objective, extra):
    """Every objective moves the pixels of its group, and a rerun gives the same exemplars bit for bit
    (the exemplars are a function of the model, the group and the context: the same on every rank)."""
    first, selection = _select(objective, extra)
    again, _ = _select(objective, extra)
    start, _ = _select(objective, [*extra, "exemplars.optimised.epochs=0"])
    for label in (2, 3):
        assert first[label].shape == (3, 3, 8, 8)
        assert torch.equal(first[label], again[label])
        assert not torch.equal(first[label], start[label])
    assert selection.notes and selection.notes[0]["what"] == "select"


def test_old_exemplars_are_stacked_once_per_phase():
    """Every class group of a phase pools the same old exemplars: they are stacked once (in their stored
    float16), the pool's batches are float32 of exactly those pixels, and a new phase stacks anew."""
    _, selection = _select("prototype")
    x, y = _images(2, 2, seed=5)
    old = {0: x[y == 0].half(), 1: x[y == 1].half()}
    ctx = SelectionContext(0, 3, torch.device("cpu"), 16, "glyphs", old)
    first = selection.old.stack(ctx)
    assert selection.old.stack(ctx) is first and first[0].dtype == torch.float16
    assert torch.equal(first[1], torch.tensor([0, 0, 1, 1]))
    task = GroupTask(None, None, None, torch.zeros(0, 3, 8, 8, dtype=torch.uint8), torch.zeros(0).long(), [], ctx,
                     selection.settings, torch.Generator().manual_seed(0), None, selection.old)
    batches = list(task.real_batches(with_old=True)(0))
    pooled = torch.cat([b for b, _ in batches])
    assert pooled.dtype == torch.float32 and pooled.shape == (4, 3, 8, 8)
    assert torch.equal(pooled.sort(0).values, x.half().float().sort(0).values)
    later = SelectionContext(0, 4, torch.device("cpu"), 16, "glyphs", old)
    assert selection.old.stack(later) is not first


def test_settings_name_the_bad_objective():
    settings = optimised_settings_type()
    with pytest.raises(ValueError, match="objective"):
        settings(objective="bilevel")
    with pytest.raises(ValueError, match="embedders"):
        MatchingSettings(embedders="pretrained")
    with pytest.raises(ValueError, match="match"):
        MatchingSettings(match="pixels")
    with pytest.raises(ValueError, match="cosine_scale"):
        PrototypeSettings(cosine_scale=0)
    with pytest.raises(ValueError, match="momentum"):
        settings(momentum=1.0)
    s = settings(lr=3.0, momentum=0.5)
    assert s.schedule() == Schedule(s.epochs, s.steps_per_epoch, s.val_batches, 3.0, s.lr_halve_every, 0.5)
    assert len(list(tensor_batches(torch.zeros(5, 1, 1, 1), torch.zeros(5), 2, torch.Generator())(0))) == 3


def test_previous_start_is_theta_before_the_phase_with_imprinted_new_rows():
    """start=previous: Θ'_0 has Θ_{i-1}'s body, buffers and old rows; the group's new rows are the
    exemplars' mean features under Θ_{i-1}, at the old rows' mean norm; and the unrolled objective from
    there still lowers its loss."""
    previous = _net(2, seed=1)
    model = _net(2, seed=2)
    model.head.grow(2)
    x0, y = _images(3, 4, seed=5)
    x0, y = x0[y >= 2], y[y >= 2]
    params, buffers = previous_params(model, previous, x0, y)
    prev = dict(previous.named_parameters())
    for name, p in params.items():
        if not name.startswith("head."):
            assert torch.equal(p, prev[name]), name
    w = params["head.weight"]
    assert torch.equal(w[:2], prev["head.weight"]) and torch.equal(params["head.bias"][2:],
                                                                  prev["head.bias"].mean().expand(2))
    feats = torch.nn.functional.normalize(previous.features(x0), dim=1)
    for c in (2, 3):
        row = torch.nn.functional.normalize(feats[y == c].mean(0), dim=0) * prev["head.weight"].norm(dim=1).mean()
        assert torch.allclose(w[c], row.detach(), atol=1e-6)
    assert all(torch.equal(buffers[n], b) for n, b in previous.named_buffers())
    objective = Unrolled(UnrolledSettings(inner_steps=2, inner_lr=0.1, start="previous", val_bn="running",
                                          inner_bn="running"))
    real_x, real_y = _images(6, 4, seed=6)
    real = [(real_x[real_y >= 2], real_y[real_y >= 2])]
    loss_of = objective.loss_of(model, y, torch.Generator(), None, start=(params, buffers))
    x = objective.optimise(model, x0, y, lambda e: iter(real), Schedule(6, 1, 1, 0.01, 10),
                           start=previous_params(model, previous, x0, y))
    assert _value(loss_of, x, real) < _value(loss_of, x0, real)
    with pytest.raises(ValueError, match="meta_data"):
        UnrolledSettings(meta_loss="group", meta_data="phase")


def test_snapshot_start_unrolls_from_the_kept_model():
    """start=snapshot: Θ' starts at the snapshot's parameters and buffers, so the exemplars are exactly those
    of the paper's start from a model that *is* the snapshot, and not those from the trained model; without a
    snapshot it starts from Θ; only start=snapshot of the unrolled objective asks the run for one."""
    model, snapshot = _net(4, seed=2), _net(4, seed=3)
    x0, y = _images(3, 4, seed=5)
    real = [_images(4, 4, seed=6)]
    images = (real[0][0] * 255).round().to(torch.uint8)

    def run(net, start, snap=None):
        objective = Unrolled(UnrolledSettings(inner_steps=2, inner_lr=0.1, start=start))
        ctx = SelectionContext(0, 1, torch.device("cpu"), snapshot=snap)
        task = GroupTask(net, x0, y, images, real[0][1], [0, 1, 2, 3], ctx, optimised_settings_type()(),
                         torch.Generator(), None, None)
        loss_of, _ = objective.loss(task)
        return descend(x0, loss_of, lambda e: iter(real), Schedule(3, 1, 1, 0.5, 10))

    from_snapshot = run(model, "snapshot", snapshot)
    assert torch.equal(from_snapshot, run(snapshot, "current"))
    assert not torch.equal(from_snapshot, run(model, "current"))
    assert torch.equal(run(model, "snapshot"), run(model, "current"))
    with pytest.raises(ValueError, match="snapshot_epoch"):
        UnrolledSettings(snapshot_epoch=0)
    wants = lambda *keys: build_selection(load_config("configs/glyphs.yaml", [  # noqa: E731
        "exemplars.selection=optimised", *[f"exemplars.optimised.{k}" for k in keys]]).exemplars).snapshot_epoch()
    assert wants("objective=unrolled", "unrolled.start=snapshot", "unrolled.snapshot_epoch=3") == 3
    assert wants("unrolled.start=snapshot", "objective=matching") == 0
    assert wants("unrolled.start=snapshot") == 0                                    # default: prototype
    assert wants("objective=unrolled", "unrolled.start=previous") == 0


def test_adjustment_uses_the_papers_optimiser_unless_asked():
    """The new exemplars' momentum and augmentation stay out of Eq. 10: an adjustment under exemplars.optimised's
    `momentum=0.9, augment=true` equals the plain one bit for bit; exemplars.folds's own `augment` and `momentum`
    opt in."""
    x, y = _images(4, 2, seed=6)
    old = {0: x[y == 0].half(), 1: x[y == 1].half()}

    def adjusted(*extra):
        cfg = load_config("configs/glyphs.yaml", ["data.image_size=8", "exemplars.adjust_old=true",
                                                  "exemplars.optimised.unrolled.inner_steps=1",
                                                  "exemplars.optimised.epochs=2", "exemplars.folds.epochs=2",
                                                  "exemplars.folds.lr=5", *extra])
        ctx = SelectionContext(cfg.seed, 2, torch.device("cpu"), 16, "glyphs", old)
        return build_adjustment(cfg.exemplars).adjust(_net(2), dict(old), [0, 1], ctx)

    plain = adjusted()
    assert not torch.equal(plain[0], old[0])
    shared = adjusted("exemplars.optimised.momentum=0.9", "exemplars.optimised.augment=true")
    for extra in ("exemplars.folds.augment=true", "exemplars.folds.momentum=0.9"):
        opted = adjusted(extra)
        assert not torch.equal(opted[0], plain[0]), extra
    for label in (0, 1):
        assert torch.equal(shared[label], plain[label])
