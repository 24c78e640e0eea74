from pathlib import Path

import pytest

from core.errors import UserError
from exemplars.adjustments.folds import INHERIT
from exemplars.selections.optimised import PAPER
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
    ("exemplars.folds.k=1", "k must be >= 2"),
    ("exemplars.adjustment=pull", "'pull' is not one of folds"),
    ("exemplars.mnemonics.inner_steps=5", "'exemplars.mnemonics.inner_steps' is now "
                                          "'exemplars.mnemonics.unrolled.inner_steps'"),
    ("exemplars.mnemonics.seed=1", "'exemplars.mnemonics.seed' was dropped"),
    ("exemplars.mnemonics.objective=prototype", "'exemplars.mnemonics.objective' is now "
                                                "'exemplars.optimised.objective'"),
    ("exemplars.mnemonics.units=raw", "units must be one of paper, pixels"),
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
    from trainer.run.stage_runners import default_spec

    cfg = load_config(ROOT / "configs" / "glyphs.yaml", ["train.incremental_lr=0.01"])
    base, later = default_spec(Train(), cfg.train, 0), default_spec(Train(), cfg.train, 1)
    assert base.lr == 0.1 and later.lr == 0.01
    assert later.lr_at(0) == 0.01 and later.lr_at(cfg.train.epochs - 1) < 0.01   # same milestones
    plain = default_spec(Train(), load_config(ROOT / "configs" / "glyphs.yaml").train, 1)
    assert plain.lr == 0.1
    # a method's own rate (LwM's 0.01) applies where the run sets none, and only after phase 0
    plain_train = load_config(ROOT / "configs" / "glyphs.yaml").train
    assert default_spec(Train(), plain_train, 1, method_lr=0.01).lr == 0.01
    assert default_spec(Train(), plain_train, 0, method_lr=0.01).lr == 0.1
    assert default_spec(Train(), cfg.train, 1, method_lr=0.05).lr == 0.01          # train.incremental_lr wins


def test_lwm_trains_its_incremental_phases_at_the_papers_rate(tmp_path):
    from trainer.config import Config
    from trainer.run.session import build_strategy

    cfg = load_config(ROOT / "configs" / "glyphs.yaml", ["strategy.name=lwm"])
    assert build_strategy(cfg).incremental_lr() == 0.01
    assert build_strategy(load_config(None, ["strategy.name=lwf"])).incremental_lr() is None
    old = Config().to_dict()                          # an LwM run written before the key: it trained at train.lr
    old["strategy"]["name"] = "lwm"
    del old["strategy"]["lwm"]["incremental_lr"]
    with pytest.raises(UserError, match=r"strategy.lwm.incremental_lr \(None -> 0.01\)"):
        _guard(tmp_path, old, "strategy.name=lwm")
    _guard(tmp_path, old, "strategy.name=lwm", "strategy.lwm.incremental_lr=null")


def _guard(tmp_path, stored: dict, *overrides: str) -> None:
    """The resume guard of a run directory whose config.yaml is `stored`, resumed with `overrides`."""
    import yaml

    from trainer.config import stored_defaults
    from trainer.config.compare import keys_read
    from trainer.run.storage.sealed_phases import guard_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    cfg = load_config(None, list(overrides))
    guard_config(tmp_path, cfg.to_dict(), stored_defaults(), keys_read(cfg))


def test_config_guard_names_changed_keys_and_accepts_keys_added_later(tmp_path):
    from trainer.config import Config

    old = Config().to_dict()
    old["strategy"]["name"] = "lwm"
    del old["strategy"]["lwm"]                         # written by an older version without this section
    same = ["strategy.name=lwm", "strategy.lwm.incremental_lr=null"]   # what a config without the key ran
    _guard(tmp_path, old, *same)                       # same run: accepted
    with pytest.raises(UserError) as e:
        _guard(tmp_path, old, *same, "protocol.phases=10", "strategy.lwm.beta=5.0")
    beta = Config().strategy.lwm.beta                  # a key the old file lacks compares to its default
    assert "protocol.phases (5 -> 10)" in str(e.value) and f"strategy.lwm.beta ({beta} -> 5.0)" in str(e.value)


def test_config_guard_compares_only_what_the_run_reads(tmp_path):
    """A default the run never reads (another strategy's, the exemplar level of a strategy without exemplars,
    another selection's or objective's, the adjustment of a run that does not adjust) may change; what it reads
    may not."""
    from trainer.config import Config

    old = Config().to_dict()                                          # lwf + herding, no adjustment
    old["strategy"]["bic"]["bias_epochs"] = 7
    old["exemplars"]["optimised"]["lr"] = 3.0
    old["exemplars"]["folds"]["lr"] = 9.0
    _guard(tmp_path, old)
    with pytest.raises(UserError, match=r"exemplars.folds.lr \(9.0 -> 0.01\)"):
        _guard(tmp_path, old, "exemplars.adjust_old=true")          # adjust_old itself differs too
    old["exemplars"]["selection"] = "optimised"
    old["exemplars"]["optimised"]["unrolled"]["inner_steps"] = 3      # not read by the prototype objective
    with pytest.raises(UserError) as e:
        _guard(tmp_path, old, "exemplars.selection=optimised")
    assert "exemplars.optimised.lr (3.0 -> 0.5)" in str(e.value) and "inner_steps" not in str(e.value)
    _guard(tmp_path, old, "exemplars.selection=optimised", "exemplars.optimised.lr=3.0")
    free = Config().to_dict()
    free["strategy"]["name"] = "finetune"
    free["exemplars"]["per_class"] = 3                                # finetune keeps no exemplars
    _guard(tmp_path, free, "strategy.name=finetune")


# exemplars.mnemonics as a config written before the recommended objective was the default (before `objective`,
# `momentum`, `augment` and Eq. 10's own loop existed): the objectives' and the adjustment's keys in one section
OLD_MNEMONICS = {"inner_steps": 50, "inner_lr": 0.01, "epochs": 10, "lr": 10.0, "adjust_lr": 0.01, "lr_halve_every": 4,
                 "checkpoint": True, "checkpoint_segment": 0, "folds": 2, "val_batch_size": 128, "val_batches": 1,
                 "steps_per_epoch": 1, "inner_batch_size": 0, "val_bn": "batch", "inner_bn": "batch",
                 "meta_loss": "all", "init": "random", "seed": 0}


def test_config_guard_keeps_a_resumed_run_on_its_exemplar_level(tmp_path):
    """A run started before the recommended objective became the default of selection=mnemonics (today's optimised;
    its config.yaml
    lacks `objective`, so it ran the paper's; its keys in the older layout) is refused when the same command now
    means another objective, naming the keys to restore; given them it resumes. Keys that change how a result is
    computed but not the result (activation checkpointing) may change."""
    from trainer.config import Config

    old = Config().to_dict()
    old["exemplars"].update(selection="mnemonics", adjust_old=True, mnemonics=dict(OLD_MNEMONICS))
    del old["exemplars"]["folds"], old["exemplars"]["adjustment"], old["exemplars"]["optimised"]
    # the command as it was then now names the paper's method: refused, told which keys give back what it ran
    with pytest.raises(UserError) as e:
        _guard(tmp_path, old, "exemplars.selection=mnemonics", "exemplars.adjust_old=true")
    assert "exemplars.selection ('optimised' -> 'mnemonics')" in str(e.value)
    assert "that is exemplars.selection=optimised now" in str(e.value)
    same = ["exemplars.selection=optimised", "exemplars.adjust_old=true", "exemplars.optimised.lr=10.0"]
    with pytest.raises(UserError) as e:
        _guard(tmp_path, old, *same)
    for diff in ("exemplars.optimised.objective ('unrolled' -> 'prototype')", "exemplars.optimised.init ('random' ->",
                 "exemplars.optimised.momentum (0.0 -> 0.9)", "exemplars.folds.epochs (None -> 50)"):
        assert diff in str(e.value)
    restored = [*same, *(f"exemplars.optimised.{k}={v}" for k, v in PAPER.items() if k != "lr"),
                "exemplars.optimised.epochs=10", "exemplars.optimised.lr_halve_every=4",
                *(f"exemplars.folds.{k}=null" for k in INHERIT), "exemplars.optimised.unrolled.checkpoint=false"]
    _guard(tmp_path, old, *restored)                                   # accepted
    with pytest.raises(UserError, match=r"exemplars.per_class \(20 -> 10\)"):
        _guard(tmp_path, old, *restored, "exemplars.per_class=10")


def test_stored_configs_in_the_older_layout_are_read_in_todays(tmp_path):
    import yaml

    from trainer.config import Config, config_from_dict, stored_config

    old = Config().to_dict()
    old["exemplars"]["mnemonics"] = {**OLD_MNEMONICS, "embedders": "both", "adjust_epochs": 7}
    del old["exemplars"]["folds"], old["exemplars"]["optimised"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"git_sha": "abc", **old}))
    cfg = config_from_dict(stored_config(tmp_path / "config.yaml"))
    mn = cfg.exemplars.optimised
    assert (mn.lr, mn.unrolled.inner_steps, mn.matching.embedders) == (10.0, 50, "both")
    assert (cfg.exemplars.folds.k, cfg.exemplars.folds.lr, cfg.exemplars.folds.epochs) == (2, 0.01, 7)


def test_the_descent_once_named_mnemonics_is_read_as_optimised():
    """A config stored while `mnemonics` named the objective descent (an exemplars.mnemonics section, no
    exemplars.optimised) is read as `optimised`, with a note naming the keys; a config of today keeps
    selection=mnemonics (the paper's method) and gets no note."""
    from trainer.config import Config
    from trainer.config.migrate import migrate, renamed

    today = Config().to_dict()
    today["exemplars"]["selection"] = "mnemonics"
    assert migrate(today) == today and renamed(today) == []
    old = Config().to_dict()
    section = old["exemplars"].pop("optimised")
    old["exemplars"].update(selection="mnemonics", mnemonics=dict(section, lr=3.0))
    got = migrate(old)["exemplars"]
    assert got["selection"] == "optimised" and got["optimised"]["lr"] == 3.0 and "mnemonics" not in got
    assert "exemplars.selection=optimised" in renamed(old)[0]
    old["exemplars"]["selection"] = "herding"                       # renamed, but ran no descent: nothing to tell
    assert migrate(old)["exemplars"]["selection"] == "herding" and renamed(old) == []
