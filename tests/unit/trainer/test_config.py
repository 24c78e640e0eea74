from pathlib import Path

import pytest

from core.errors import UserError
from trainer.config import load_config

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def test_default_config_loads():
    cfg = load_config(ROOT / "configs" / "glyphs.yaml")
    assert cfg.protocol.base_classes == 32 and cfg.protocol.phases == 5
    assert cfg.protocol.class_order_seed == 1993
    assert cfg.strategy.name == "lwf" and cfg.exemplars.selection == "herding"


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_validates(recipe):
    from core.protocol import make_plan
    from trainer.methods.strategies.base import REGISTRY

    cfg = load_config(recipe)
    REGISTRY.get(cfg.strategy.name)
    total = cfg.protocol.num_classes or {"glyphs": 62, "cifar": 100, "imagenet": 1000}[cfg.data.preset]
    plan = make_plan(max(total, 62) if cfg.data.preset == "glyphs" else 1000 if cfg.data.preset == "imagenet"
                     else 100, cfg.protocol.base_classes, cfg.protocol.phases, num_classes=total)
    assert plan.num_phases == cfg.protocol.phases + 1


def test_recipes_cover_the_paper_protocols():
    names = {p.stem for p in RECIPES}
    for n in (5, 10, 25):
        assert {f"cifar100_b50_{n}", f"imagenet_subset_b50_{n}", f"imagenet1k_b500_{n}"} <= names
    assert "glyphs_b12_25" in names


def test_paper_hyperparameters_in_cifar_recipe():
    cfg = load_config(ROOT / "configs" / "cifar100_b50_5.yaml")
    t = cfg.train
    assert (t.epochs, t.lr, t.lr_milestones, t.momentum, t.weight_decay) == (160, 0.1, [80, 120], 0.9, 5e-4)
    assert (t.kd_lambda, t.kd_temperature) == (0.5, 2.0)
    assert cfg.model.arch == "resnet32"
    inet = load_config(ROOT / "configs" / "imagenet1k_b500_25.yaml")
    assert (inet.train.epochs, inet.train.lr_milestones, inet.model.arch) == (90, [30, 60], "resnet18")
    assert (inet.protocol.base_classes, inet.protocol.phases) == (500, 25)


def test_overrides_parse_types(tmp_path):
    cfg = load_config(ROOT / "configs" / "glyphs.yaml",
                      ["train.epochs=3", "exemplars.budget=100", "train.lr_milestones=[1,2]", "train.lr=1"])
    assert cfg.train.epochs == 3 and cfg.exemplars.budget == 100
    assert cfg.train.lr_milestones == [1, 2] and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("override,needle", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("train.epochs=three", "config key 'train.epochs': expected int"),
    ("exemplars.adjust_old=5", "config key 'exemplars.adjust_old': expected bool"),
    ("exemplars.selection=best", "'best' is not one of"),
    ("protocol.base_classes=0", "protocol.base_classes' must be positive"),
    ("exemplars.mnemonics.folds=1", "folds must be >= 2"),
    ("train.incremental_lr=0", "'train.incremental_lr' must be positive"),
    ("train.epochs", "must look like key=value"),
])
def test_bad_config_names_the_key(override, needle):
    with pytest.raises(UserError, match=None) as e:
        load_config(ROOT / "configs" / "glyphs.yaml", [override])
    assert needle in str(e.value)


def test_base_inheritance_and_missing_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 7\n  batch_size: 64\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.train.epochs == 9 and cfg.train.batch_size == 64
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_incremental_lr_applies_to_later_phases_only():
    from trainer.methods.strategies.stages import Train
    from trainer.run.phase import default_spec

    cfg = load_config(ROOT / "configs" / "glyphs.yaml", ["train.incremental_lr=0.01"])
    base, later = default_spec(Train(), cfg.train, 0), default_spec(Train(), cfg.train, 1)
    assert base.lr == 0.1 and later.lr == 0.01
    assert later.lr_at(0) == 0.01 and later.lr_at(cfg.train.epochs - 1) < 0.01   # same milestones
    plain = default_spec(Train(), load_config(ROOT / "configs" / "glyphs.yaml").train, 1)
    assert plain.lr == 0.1
