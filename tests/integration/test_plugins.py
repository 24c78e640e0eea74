"""A new selection, strategy, exemplar objective and adjustment are each one module: this file alone defines,
registers and runs them (their settings included) through the real run driver, without editing any file of mnemo."""
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from exemplars.adjustments.base import REGISTRY as ADJUSTMENTS
from exemplars.adjustments.base import Adjustment
from exemplars.objectives.base import REGISTRY as OBJECTIVES
from exemplars.objectives.base import Objective
from exemplars.selections.base import REGISTRY as SELECTIONS
from exemplars.selections.base import Selection
from trainer.config import load_config
from trainer.methods.strategies.base import REGISTRY as STRATEGIES
from trainer.methods.strategies.base import Strategy
from trainer.run.driver import run
from trainer.run.storage import sealed_phases

FAST = ["train.epochs=1", "train.base_epochs=1", "train.finetune_epochs=1", "protocol.base_classes=4",
        "protocol.phases=2", "exemplars.per_class=3", "data.image_size=16", "train.batch_size=32",
        "eval.batch_size=64"]


@dataclass
class EveryKthSettings:
    step: int = 2                          # take images 0, k, 2k, ... of each class


class EveryKth(Selection):
    name = "every_kth"
    Settings = EveryKthSettings

    def select(self, model, images, labels, group, m, ctx):
        return {label: images[labels == label][:: self.settings.step][:m].float() / 255 for label in group}


@dataclass
class SmoothedCESettings:
    smoothing: float = 0.0


class SmoothedCE(Strategy):
    name = "smoothed_ce"
    Settings = SmoothedCESettings
    calls = 0

    def loss(self, model, batch, stage):
        type(self).calls += 1
        ce = F.cross_entropy(model(batch.x)[:, : self.num_seen], batch.y, label_smoothing=self.settings.smoothing)
        return {"loss": ce, "ce": ce}


@dataclass
class TowardsGreySettings:
    grey: float = 0.5


class TowardsGrey(Objective):
    """The pixels minimise their squared distance to one grey level (the real batches are only iterated)."""
    name = "towards_grey"
    Settings = TowardsGreySettings

    def loss(self, task):
        return (lambda x, real: ((x - self.settings.grey) ** 2).sum()), task.real_batches(with_old=False)


@dataclass
class ScaleSettings:
    factor: float = 0.5


class Scale(Adjustment):
    """Old exemplars scaled by a factor (darker with factor < 1)."""
    name = "scale"
    Settings = ScaleSettings

    def adjust(self, model, exemplars, group, ctx):
        return {label: exemplars[label].float() * self.settings.factor for label in group}


@pytest.fixture
def plugins():
    SELECTIONS.register(EveryKth)
    STRATEGIES.register(SmoothedCE)
    OBJECTIVES.register(TowardsGrey)
    ADJUSTMENTS.register(Scale)
    yield
    SELECTIONS.unregister("every_kth")
    STRATEGIES.unregister("smoothed_ce")
    OBJECTIVES.unregister("towards_grey")
    ADJUSTMENTS.unregister("scale")


def test_a_selection_and_a_strategy_from_one_file_each(plugins, tmp_path, digits_shards):
    cfg = load_config("configs/glyphs.yaml", [f"data.shards={digits_shards}", *FAST, "strategy.name=smoothed_ce",
                                              "strategy.smoothed_ce.smoothing=0.1", "exemplars.selection=every_kth",
                                              "exemplars.every_kth.step=3"])
    assert cfg.strategy.smoothed_ce.smoothing == 0.1 and cfg.exemplars.every_kth.step == 3
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "complete" and summary["phases_done"] == 3
    assert SmoothedCE.calls > 0
    bank = sealed_phases.load_file(tmp_path / "run", 0, "memory.pt")["bank"]
    assert sorted(bank) == [0, 1, 2, 3] and all(len(v) == 3 for v in bank.values())
    # the stored exemplars are images 0, 3, 6 of each class, as the plug-in's own setting says
    from core.protocol import make_plan
    from data_pipeline.loading.phase_images import PhaseImages
    from data_pipeline.shards.manifest import load_manifest

    plan = make_plan(10, 4, 2)
    real = PhaseImages(load_manifest(digits_shards), "train", plan.class_ids([0]), "glyphs", 16)
    torch.testing.assert_close(bank[0].float(), (real.classes(plan.class_ids([0]))[::3][:3].float() / 255).half().float())


def test_unknown_plugin_settings_are_refused_with_the_key(plugins):
    from core.errors import UserError

    with pytest.raises(UserError, match="exemplars.every_kth.stride"):
        load_config("configs/glyphs.yaml", ["exemplars.every_kth.stride=2"])


def test_an_exemplar_objective_and_an_adjustment_from_one_file_each(plugins, tmp_path, digits_shards):
    from trainer.config.compare import keys_read

    keys = [*FAST, f"data.shards={digits_shards}", "exemplars.selection=optimised",
            "exemplars.optimised.objective=towards_grey", "exemplars.optimised.towards_grey.grey=0.25",
            "exemplars.optimised.epochs=3", "exemplars.optimised.lr=0.2", "exemplars.optimised.augment=false"]
    cfg = load_config("configs/glyphs.yaml", [*keys, "exemplars.adjust_old=true", "exemplars.adjustment=scale",
                                              "exemplars.scale.factor=0.5"])
    assert cfg.exemplars.optimised.towards_grey.grey == 0.25 and cfg.exemplars.scale.factor == 0.5
    read = keys_read(cfg)
    assert "exemplars.optimised.towards_grey" in read and "exemplars.scale" in read
    assert "exemplars.optimised.prototype" not in read and "exemplars.folds" not in read
    assert run(cfg, tmp_path / "run")["status"] == "complete"
    assert run(load_config("configs/glyphs.yaml", [*keys, "exemplars.optimised.epochs=0"]),
               tmp_path / "start")["status"] == "complete"
    memory = {p: sealed_phases.load_file(tmp_path / "run", p, "memory.pt")["bank"] for p in (0, 1)}
    start = sealed_phases.load_file(tmp_path / "start", 0, "memory.pt")["bank"]      # herding's, not optimised
    for label in range(4):
        moved, herded = ((b[label].float() - 0.25).abs().mean() for b in (memory[0], start))
        assert moved < 0.8 * herded, label                                  # optimised towards the grey level
        # phase 1 adjusted the old classes: scaled by the plug-in's own factor
        torch.testing.assert_close(memory[1][label].float(), (memory[0][label].float() * 0.5).half().float())
    assert (memory[1][4].float() - 0.25).abs().mean() < 0.8 * (start[0].float() - 0.25).abs().mean()   # a new class


def test_an_objective_and_an_adjustment_may_not_share_a_name_with_a_selection(plugins):
    class Herding(Scale):
        name = "herding"

    ADJUSTMENTS.register(Herding)
    try:
        with pytest.raises(RuntimeError, match="share one config section"):
            load_config("configs/glyphs.yaml")
    finally:
        ADJUSTMENTS.unregister("herding")
