"""exemplars/update.py and the selections: which real images a class group's exemplars start from."""
import torch

from exemplars.selections.base import SelectionContext
from exemplars.update import build_selection
from trainer.config import load_config
from trainer.methods.models.net import IncrementalNet


def _group_images(n_per_class=12, side=16):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 3, side, side), generator=g, dtype=torch.uint8)
    return lambda group: (images, labels)


def _select(selection, init, epochs=0, section="optimised"):
    init = [f"exemplars.{section}.init={init}"] if section == "optimised" else []
    cfg = load_config("configs/glyphs.yaml", ["data.image_size=16", f"exemplars.selection={selection}", *init,
                                              f"exemplars.{section}.epochs={epochs}"])
    torch.manual_seed(0)
    model = IncrementalNet(cfg.model.arch, cfg.data.preset)
    model.head.grow(2)
    model.eval()
    images, labels = _group_images()([0, 1])
    ctx = SelectionContext(cfg.seed, 0, torch.device("cpu"), cfg.eval.batch_size)
    return build_selection(cfg.exemplars).select(model, images, labels, [0, 1], 5, ctx)


def test_optimised_exemplars_start_from_random_or_herding_exemplars():
    """With 0 outer epochs the optimised selection returns its initialisation: with optimised.init=random the random
    selection's exemplars (Algorithm 1 step 10), with init=herding (the default) the herding selection's; the
    paper's method (selection=mnemonics) starts from the random subset."""
    random, herding = _select("random", "random"), _select("herding", "random")
    assert any(not torch.equal(random[l], herding[l]) for l in (0, 1))
    for init, expected in (("random", random), ("herding", herding)):
        got = _select("optimised", init)
        for label in (0, 1):
            assert torch.equal(got[label], expected[label]), (init, label)
    paper = _select("mnemonics", None, section="mnemonics")
    assert all(torch.equal(paper[l], random[l]) for l in (0, 1))


def test_fewer_class_groups_than_ranks_is_named_with_the_fix(caplog):
    """Groups never depend on the world size, so a recipe whose group size leaves ranks without a group
    is told so (rank 0, once per stage of the exemplar level, naming the stage), with the setting that fixes it."""
    from core.ranks import DistInfo
    from exemplars.update import LOCAL, _Level, _spread

    work = lambda g: {l: torch.zeros(1, 3, 2, 2) for l in g}           # noqa: E731
    with caplog.at_level("WARNING", logger="exemplars.update"):
        _spread("adjustment", [[0, 1], [2, 3]], len, work, _Level(0, DistInfo(0, 4), LOCAL, None, []))
    assert "exemplar adjustment: 2 class group(s) for 4 ranks, so 2 rank(s) wait idle" in caplog.text
    assert "exemplars.group_size" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="exemplars.update"):
        _spread("selection", [[0], [1], [2], [3]], len, work, _Level(0, DistInfo(0, 4), LOCAL, None, []))
        _spread("selection", [[0, 1]], len, work, _Level(0, DistInfo(1, 4), LOCAL, None, []))       # not rank 0: silent
    assert "idle" not in caplog.text


def test_a_stop_inside_the_exemplar_level_resumes_at_the_next_class_group(tmp_path, monkeypatch):
    """A stop requested during a class group's work (core/stop.py) ends the level after that group, whose result is
    kept (trainer/run/storage/group_results.py); the level run again takes the kept group and computes only the
    others, and the memory equals an uninterrupted level's."""
    import pytest

    from core import stop
    from exemplars.memory import ExemplarMemory
    from exemplars.selections.herding import Herding
    from exemplars.update import PhaseClasses, update_memory
    from trainer.run.storage.group_results import GroupStore

    cfg = load_config("configs/glyphs.yaml", ["data.image_size=16", "exemplars.selection=herding",
                                              "exemplars.group_size=1", "exemplars.per_class=4"])
    torch.manual_seed(0)
    model = IncrementalNet(cfg.model.arch, cfg.data.preset)
    model.head.grow(3)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (30, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(3).repeat_interleave(10)
    phase = PhaseClasses([0, 1, 2], [], lambda group: (images[labels == group[0]], labels[labels == group[0]]),
                         {0: 10, 1: 10, 2: 10})
    ctx = SelectionContext(cfg.seed, 0, torch.device("cpu"), cfg.eval.batch_size)
    uninterrupted = ExemplarMemory()
    update_memory(model, uninterrupted, phase, cfg.exemplars, ctx)

    calls = []
    select = Herding.select

    def counted(self, model, images, labels, group, m, ctx):
        calls.append(group[0])
        if len(calls) == 2:
            stop.request("a test's stop")          # what the signal handler records, during group 2's work
        return select(self, model, images, labels, group, m, ctx)

    monkeypatch.setattr(Herding, "select", counted)
    store, memory = GroupStore(tmp_path, 0), ExemplarMemory()
    try:
        with pytest.raises(stop.StopRequested, match="stopped after class group 2 of 3"):
            update_memory(model, memory, phase, cfg.exemplars, ctx, kept=store)
    finally:
        stop.reset()
    assert calls == [0, 1] and len(memory) == 0 and sorted(p.name for p in store.dir.iterdir()) == \
        ["selection-0-0.pt", "selection-1-1.pt"]
    update_memory(model, memory, phase, cfg.exemplars, ctx, kept=store)
    assert calls == [0, 1, 2]                                 # the kept groups were not selected again
    assert sorted(memory.bank) == [0, 1, 2]
    assert all(torch.equal(memory.get(l), uninterrupted.get(l)) for l in range(3))
