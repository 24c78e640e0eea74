"""The run configuration: typed sections, strict YAML, `key=value` overrides.

`Config` is assembled from the rooms that own their settings: the sections in `sections.py`, the
engine's (`engine`), and the plug-in registries: `strategy` holds `name` plus one section per
strategy that has `Settings` (strategy.<name>), `exemplars` holds the memory keys plus one section per
selection and per adjustment that has settings (exemplars.<name>; the optimised selection's own section
holds one per exemplar objective, exemplars.optimised.<objective>). A plug-in registered later (a test,
a user's own module) joins at the next `config_type()`. Stored configs in an older layout are read in
today's (migrate.py); which keys a resumed run compares is compare.py's.

Names other tools rely on: data.shards, protocol.base_classes, protocol.phases,
protocol.class_order_seed, strategy.name, exemplars.selection, exemplars.adjust_old,
exemplars.per_class, exemplars.budget, train.epochs, train.batch_size, seed.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import field
from pathlib import Path
from typing import Optional

import yaml

from core import atomic
from core.errors import UserError, check_choice
from data_pipeline.loading.batch_plan import LAST_BATCH
from data_pipeline.loading.settings import DATA_PRESETS, LOADERS, DataSettings
from exemplars.adjustments.base import REGISTRY as ADJUSTMENTS
from exemplars.codecs.base import REGISTRY as CODECS
from exemplars.codecs.base import build_codec
from exemplars.objectives.base import REGISTRY as OBJECTIVES
from exemplars.selections.base import REGISTRY as SELECTIONS
from trainer.config.migrate import check_current, migrate
from trainer.config.schema import apply_overrides, build, read_yaml_tree, to_dict
from trainer.config.sections import (
    ARCHS,
    EvalConfig,
    LaunchConfig,
    LoggingConfig,
    ModelConfig,
    ProtocolConfig,
    TrainConfig,
)
from trainer.engine.deepspeed_engine import GRAD_COMM_DTYPES, PRECISIONS, EngineSettings
from trainer.methods.strategies.base import REGISTRY as STRATEGIES

_BUILT: dict[tuple, type] = {}


def _plugin_fields(*registries) -> list:
    fields, owner = [], {}
    for registry in registries:
        for name, cls in registry.classes().items():
            if name in owner:
                raise RuntimeError(f"{registry.key} '{name}' and {owner[name]} '{name}' would share one config "
                                   "section: rename one")
            owner[name] = registry.key
            kind = cls.settings_type()
            if kind is not None:
                fields.append((name, kind, field(default_factory=kind)))
    return fields


def _named(cls: type) -> type:
    """Give an assembled section a module-level name, so configs pickle (submitit sends them to jobs)."""
    cls.__module__ = __name__
    setattr(sys.modules[__name__], cls.__name__, cls)
    return cls


def config_type() -> type:
    """The `Config` dataclass for the plug-ins registered now (built once per set of plug-ins)."""
    key = tuple(tuple(r.classes().items()) for r in (STRATEGIES, SELECTIONS, OBJECTIVES, ADJUSTMENTS, CODECS))
    if key not in _BUILT:
        strategy = _named(dataclasses.make_dataclass(
            "StrategyConfig", [("name", str, field(default="lwf")), *_plugin_fields(STRATEGIES)]))
        exemplars = _named(dataclasses.make_dataclass("ExemplarConfig", [
            ("selection", str, field(default="herding")),           # a registered selection's name
            ("per_class", int, field(default=20)),                  # fixed number per class (budget null)
            ("budget", Optional[int], field(default=None)),         # fixed total memory shared by all seen classes
            ("adjust_old", bool, field(default=False)),             # adjust old exemplars (the paper's Eq. 10)
            ("adjustment", str, field(default="folds")),            # a registered adjustment's name
            ("group_size", int, field(default=10)),                 # classes optimised together (the unit over ranks)
            ("codec", str, field(default="raw")),                   # how exemplars are stored (exemplars/codecs/)
            # share of real training images shown as the memory stores them (its codec's store and decode), 0-1,
            # from phase 1 on
            ("real_as_stored", float, field(default=0.0)),
            *_plugin_fields(SELECTIONS, ADJUSTMENTS, CODECS)]))
        config = _named(dataclasses.make_dataclass("Config", [
            ("seed", int, field(default=0)),
            ("data", DataSettings, field(default_factory=DataSettings)),
            ("protocol", ProtocolConfig, field(default_factory=ProtocolConfig)),
            ("model", ModelConfig, field(default_factory=ModelConfig)),
            ("train", TrainConfig, field(default_factory=TrainConfig)),
            ("engine", EngineSettings, field(default_factory=EngineSettings)),
            ("strategy", strategy, field(default_factory=strategy)),
            ("exemplars", exemplars, field(default_factory=exemplars)),
            ("eval", EvalConfig, field(default_factory=EvalConfig)),
            ("logging", LoggingConfig, field(default_factory=LoggingConfig)),
            ("launch", LaunchConfig, field(default_factory=LaunchConfig)),
        ], namespace={"to_dict": lambda self: to_dict(self)}))
        _BUILT[key] = config
    cls = _BUILT[key]
    _named(cls)
    return cls


def defaults() -> dict:
    """Every key at its default value."""
    return config_type()().to_dict()


def stored_defaults() -> dict:
    """What a key that a stored config.yaml lacks stood for when that config was written: today's default, except
    where a plug-in says otherwise (`Plugin.before_keys`): e.g. exemplars.optimised's shared keys defaulted to the
    paper's settings until the recommended objective became the default, so a config without the keys added then
    (objective, momentum, augment) ran at the paper's values; the adjustment ran on the new exemplars' outer loop
    until it had one of its own; BiC's bias stage ran without its β penalty; every run clipped its gradient at
    norm 1 (train.grad_clip), DeepSpeed's default, until the engine set it from the config; and an epoch ended
    in a short batch (train.last_batch) until batches were cut evenly."""
    out = defaults()
    out["train"]["grad_clip"] = 1.0    # DeepSpeed's own default clipped every step at norm 1 before the key existed
    out["train"]["last_batch"] = "short"
    for section, registry in (("strategy", STRATEGIES), ("exemplars", SELECTIONS), ("exemplars", ADJUSTMENTS)):
        for name, cls in registry.classes().items():
            if cls.before_keys and name in out[section]:
                out[section][name].update(cls.before_keys)
    return out


def _check_choice(key: str, value, choices) -> None:
    try:
        check_choice(f"'{key}'", value, choices)
    except ValueError as e:
        raise UserError(f"config key {e}") from None


def validate(cfg):
    """Value checks beyond types (the strategy name is checked against the registry when it is built)."""
    _check_choice("data.preset", cfg.data.preset, DATA_PRESETS)
    _check_choice("data.loader", cfg.data.loader, LOADERS)
    _check_choice("model.arch", cfg.model.arch, ARCHS)
    _check_choice("exemplars.selection", cfg.exemplars.selection, SELECTIONS.known())
    _check_choice("exemplars.adjustment", cfg.exemplars.adjustment, ADJUSTMENTS.known())
    _check_choice("exemplars.codec", cfg.exemplars.codec, CODECS.known())
    try:
        build_codec(cfg.exemplars).check(cfg.data.image_size)
    except ValueError as e:
        raise UserError(f"config section 'exemplars.{cfg.exemplars.codec}': {e}") from None
    _check_choice("engine.precision", cfg.engine.precision, PRECISIONS)
    _check_choice("engine.grad_comm_dtype", cfg.engine.grad_comm_dtype, GRAD_COMM_DTYPES)
    _check_choice("train.last_batch", cfg.train.last_batch, LAST_BATCH)
    positive = {
        "protocol.base_classes": cfg.protocol.base_classes,
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "train.lr": cfg.train.lr,
        "data.image_size": cfg.data.image_size,
        "eval.batch_size": cfg.eval.batch_size,
    }
    if cfg.train.incremental_lr is not None:
        positive["train.incremental_lr"] = cfg.train.incremental_lr
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"config key '{key}' must be positive, got {value}")
    if cfg.protocol.phases < 0:
        raise UserError(f"config key 'protocol.phases' must be >= 0, got {cfg.protocol.phases}")
    if cfg.train.checkpoint_minutes < 0:
        raise UserError(f"config key 'train.checkpoint_minutes' must be >= 0 (0: every epoch end), got "
                        f"{cfg.train.checkpoint_minutes}")
    if cfg.train.grad_clip < 0:
        raise UserError(f"config key 'train.grad_clip' must be >= 0 (0: no clipping), got {cfg.train.grad_clip}")
    if cfg.exemplars.per_class < 0:
        raise UserError("config key 'exemplars.per_class' must be >= 0")
    if cfg.exemplars.budget is not None and cfg.exemplars.budget < 0:
        raise UserError("config key 'exemplars.budget' must be >= 0 or null")
    share = cfg.data.exemplar_share
    if share is not None and not 0.0 < share < 1.0:
        raise UserError(f"config key 'data.exemplar_share' must be in (0, 1) or null, got {share}")
    if cfg.exemplars.group_size < 1:
        raise UserError("config key 'exemplars.group_size' must be >= 1")
    stored = cfg.exemplars.real_as_stored
    if not 0.0 <= stored <= 1.0:
        raise UserError(f"config key 'exemplars.real_as_stored' must be in [0, 1], got {stored}")
    if stored > 0 and cfg.exemplars.codec == "raw":
        raise UserError("config key 'exemplars.real_as_stored' shows real images as the memory stores them, and "
                        "exemplars.codec=raw stores them as they are: set a codec (png, jpeg, lowres) or leave it 0")
    if cfg.engine.zero_stage not in (0, 1, 2):
        raise UserError(f"config key 'engine.zero_stage' must be 0, 1 or 2, got {cfg.engine.zero_stage}")
    if not 0.0 <= cfg.train.kd_lambda <= 1.0:
        raise UserError(f"config key 'train.kd_lambda' must be in [0, 1], got {cfg.train.kd_lambda}")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()):
    data = read_yaml_tree(Path(path)) if path else {}
    data = apply_overrides(data, list(overrides))
    check_current(data)
    return config_from_dict(data)


def config_from_dict(data: dict):
    return validate(build(config_type(), data))


# What `mnemo train` writes into RUN/config.yaml beside the config sections (trainer/run/driver.py).
RUN_EXTRA_KEYS = ("git_sha", "world_size")


def stored_config(path: Path) -> dict:
    """A run's config.yaml as a plain dict in today's layout (migrate.py), without the RUN_EXTRA_KEYS
    (OSError/YAMLError propagate)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return migrate({k: v for k, v in data.items() if k not in RUN_EXTRA_KEYS})


def dump_config(cfg, path: Path, extra: dict | None = None) -> None:
    data = to_dict(cfg)
    if extra:
        data = {**extra, **data}
    atomic.write_text(path, yaml.safe_dump(data, sort_keys=False))


config_type()            # defines Config, StrategyConfig and ExemplarConfig for the built-in plug-ins
