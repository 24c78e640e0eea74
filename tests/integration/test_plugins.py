"""A new selection and a new strategy are each one module: this file alone defines, registers and runs
them (their settings included) through the real run driver, without editing any file of mnemo."""
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

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


@pytest.fixture
def plugins():
    SELECTIONS.register(EveryKth)
    STRATEGIES.register(SmoothedCE)
    yield
    SELECTIONS.unregister("every_kth")
    STRATEGIES.unregister("smoothed_ce")


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
