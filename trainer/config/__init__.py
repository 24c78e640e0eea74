"""The run configuration: typed sections, strict YAML, `key=value` overrides.

Names other tools rely on (DESIGN.md): data.shards, protocol.base_classes, protocol.phases,
protocol.class_order_seed, strategy.name, exemplars.selection, exemplars.adjust_old,
exemplars.per_class, exemplars.budget, train.epochs, train.batch_size, seed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from core.errors import UserError
from exemplars.mnemonics import MnemonicsSettings
from trainer.config.schema import apply_overrides, build, read_yaml_tree, to_dict

DATA_PRESETS = ("glyphs", "cifar", "imagenet")
LOADERS = ("torch", "dali", "auto")
ARCHS = ("resnet32", "resnet20", "resnet18")
SELECTIONS = ("random", "herding", "mnemonics")
PRECISIONS = ("auto", "fp32", "bf16")    # bf16 = autocast on GPU (no loss scaling needed)


@dataclass
class DataConfig:
    shards: str = "data/glyphs"          # directory holding manifest.json
    preset: str = "glyphs"               # augmentation/eval transforms: glyphs | cifar | imagenet
    image_size: int = 32                 # model input side in pixels
    loader: str = "torch"                # torch | dali | auto
    cache_max_gb: float = 8.0            # the torch loader keeps a phase's decoded images in memory
    workers: int = 2                     # decode threads/processes
    exemplar_share: Optional[float] = None   # exemplars' share of each batch; null: as samples of D ∪ E


@dataclass
class ProtocolConfig:
    base_classes: int = 50               # B: classes in phase 0
    phases: int = 5                      # N: incremental phases after phase 0
    class_order_seed: int = 1993         # NumPy RandomState seed of the class order
    num_classes: Optional[int] = None    # use only the first K classes of the order (ImageNet-Subset: 100)


@dataclass
class ModelConfig:
    arch: str = "resnet32"               # resnet32 | resnet20 (CIFAR-style, 32 px) | resnet18 (timm, 224 px)


@dataclass
class TrainConfig:
    epochs: int = 160                    # model-level epochs per phase (Eq. 5-6)
    base_epochs: Optional[int] = None    # epochs of phase 0 (default: epochs)
    batch_size: int = 128                # global batch (all ranks together)
    lr: float = 0.1                      # alpha_1
    incremental_lr: Optional[float] = None   # lr of phases >= 1 (default: lr); LwM's steps use 0.01
    lr_milestones: list[int] = field(default_factory=lambda: [80, 120])   # as fractions of 160 epochs
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd_lambda: float = 0.5               # lambda of Eq. 5: lambda*CE + (1-lambda)*KD
    kd_temperature: float = 2.0          # tau of Eq. 1
    finetune_epochs: int = 20            # balanced fine-tune on exemplars only (Algorithm 1 step 18)
    finetune_lr: float = 0.01            # alpha_2, as the paper uses for this step
    log_every: int = 50                  # progress line every N steps
    checkpoint_every: int = 1            # engine checkpoint inside a phase every N epochs (0: off)
    warmup_epochs: int = 0
    weight_transfer: bool = False        # incremental phases learn scale/shift over frozen conv weights
    base_from: Optional[str] = None      # run dir whose trained phase-0 model is reused (trainer/base_model.py)


@dataclass
class EngineConfig:
    zero_stage: int = 0                  # DeepSpeed ZeRO stage (0 or 1)
    precision: str = "auto"              # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    micro_batch_size: Optional[int] = None   # per-rank micro batch; default: global batch / world


def _choice(key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key} '{value}' is not one of {', '.join(choices)}")


@dataclass
class LwFSettings:
    # softmax: the mnemonics paper's Eq. 5, lambda*CE + (1-lambda)*KD(tau) with train.kd_lambda/kd_temperature;
    # sigmoid: LwF-MC as iCaRL implements it (per-class BCE, sigmoid targets from the teacher)
    loss: str = "softmax"

    def __post_init__(self):
        _choice("loss", self.loss, ("softmax", "sigmoid"))


@dataclass
class ICaRLSettings:
    # sigmoid: iCaRL's own loss (Algorithm 3); softmax: Eq. 5 (the iCaRL of the LUCIR/mnemonics code base)
    loss: str = "sigmoid"

    def __post_init__(self):
        _choice("loss", self.loss, ("softmax", "sigmoid"))


@dataclass
class BiCSettings:
    val_fraction: float = 0.1            # share of each old class's exemplars held out; as many per new class
    kd_temperature: float = 2.0          # T of BiC's distillation (Eq. 3)
    bias_epochs: int = 50                # second stage: the bias layer on the held-out split
    bias_lr: float = 0.01
    bias_lr_milestones: list[int] = field(default_factory=lambda: [30, 40])

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class LUCIRSettings:
    lambda_base: float = 5.0             # less-forget weight; LUCIR: 5 on CIFAR-100, 10 on ImageNet
    adaptive_lambda: bool = True         # lambda = lambda_base * sqrt(|old classes| / |new classes|)
    margin: float = 0.5                  # m of the margin-ranking loss
    hard_negatives: int = 2              # K: top-K new-class scores ranked against the ground truth
    margin_weight: float = 1.0
    imprint: bool = True                 # new-class weights from normalised class-mean features
    cbf_epochs: int = 20                 # class-balanced fine-tuning (classifier only) on the exemplars
    cbf_lr: float = 0.01
    cbf_lr_milestones: list[int] = field(default_factory=lambda: [10])

    def __post_init__(self):
        if self.hard_negatives < 1:
            raise ValueError(f"hard_negatives must be >= 1, got {self.hard_negatives}")


@dataclass
class LwMSettings:
    beta: float = 2.0                    # weight of L_D (sigmoid distillation); chosen on validation, docs/strategies.md
    gamma: float = 4.0                   # weight of L_AD (Grad-CAM attention distillation); ditto


@dataclass
class StrategyConfig:
    name: str = "lwf"
    lwf: LwFSettings = field(default_factory=LwFSettings)
    icarl: ICaRLSettings = field(default_factory=ICaRLSettings)
    bic: BiCSettings = field(default_factory=BiCSettings)
    lucir: LUCIRSettings = field(default_factory=LUCIRSettings)
    lwm: LwMSettings = field(default_factory=LwMSettings)


@dataclass
class ExemplarConfig:
    selection: str = "herding"           # random | herding | mnemonics
    per_class: int = 20                  # fixed number per class (when budget is null)
    budget: Optional[int] = None         # fixed total memory, shared by all seen classes
    adjust_old: bool = False             # Eq. 10 adjustment of old exemplars
    group_size: int = 10                 # classes optimised together (the unit spread over ranks)
    mnemonics: MnemonicsSettings = field(default_factory=MnemonicsSettings)


@dataclass
class EvalConfig:
    batch_size: int = 256
    nme: bool = True                     # also report nearest-mean-of-exemplars accuracy


@dataclass
class LaunchConfig:
    """Cluster resources for `mnemo launch` (launch/); `mnemo train` ignores this section."""
    cluster: str = "slurm"               # slurm | local | debug (submitit executors)
    mode: str = "chain"                  # chain: one job per phase (afterok) | requeue: one self-requeueing job
    nodes: int = 1
    gpus_per_node: int = 0               # 0: CPU-only jobs
    tasks_per_node: Optional[int] = None  # processes per node (default: one per GPU, at least 1)
    cpus_per_task: int = 8
    mem_gb: Optional[float] = None       # per node
    time_min: int = 240                  # time limit of each job, minutes
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    sbatch: list[str] = field(default_factory=list)   # extra sbatch parameters: "key=value" or "flag"
    setup: list[str] = field(default_factory=list)    # shell lines run before srun (module load ...)
    signal_delay_s: int = 120            # SLURM signals the job this long before its time limit
    max_requeues: int = 20               # time-outs after which a job stops requeueing itself
    job_name: str = "mnemo"
    python: Optional[str] = None         # python command inside the job (default: the launching interpreter)


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    exemplars: ExemplarConfig = field(default_factory=ExemplarConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def to_dict(self) -> dict:
        return to_dict(self)


def _check_choice(key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"config key '{key}': '{value}' is not one of {', '.join(choices)}")


def validate(cfg: Config) -> Config:
    """Value checks beyond types (the strategy name is checked against the registry later)."""
    _check_choice("data.preset", cfg.data.preset, DATA_PRESETS)
    _check_choice("data.loader", cfg.data.loader, LOADERS)
    _check_choice("model.arch", cfg.model.arch, ARCHS)
    _check_choice("exemplars.selection", cfg.exemplars.selection, SELECTIONS)
    _check_choice("engine.precision", cfg.engine.precision, PRECISIONS)
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
    if cfg.exemplars.per_class < 0:
        raise UserError("config key 'exemplars.per_class' must be >= 0")
    if cfg.exemplars.budget is not None and cfg.exemplars.budget < 0:
        raise UserError("config key 'exemplars.budget' must be >= 0 or null")
    share = cfg.data.exemplar_share
    if share is not None and not 0.0 < share < 1.0:
        raise UserError(f"config key 'data.exemplar_share' must be in (0, 1) or null, got {share}")
    if cfg.exemplars.group_size < 1:
        raise UserError("config key 'exemplars.group_size' must be >= 1")
    if cfg.engine.zero_stage not in (0, 1, 2):
        raise UserError(f"config key 'engine.zero_stage' must be 0, 1 or 2, got {cfg.engine.zero_stage}")
    if not 0.0 <= cfg.train.kd_lambda <= 1.0:
        raise UserError(f"config key 'train.kd_lambda' must be in [0, 1], got {cfg.train.kd_lambda}")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    data = read_yaml_tree(Path(path)) if path else {}
    data = apply_overrides(data, list(overrides))
    return validate(build(Config, data))


def config_from_dict(data: dict) -> Config:
    return validate(build(Config, data))


# What `mnemo train` writes into RUN/config.yaml beside the config sections (trainer/main.py).
RUN_EXTRA_KEYS = ("git_sha", "world_size")


def stored_config(path: Path) -> dict:
    """A run's config.yaml as a plain dict, without the RUN_EXTRA_KEYS (OSError/YAMLError propagate)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {k: v for k, v in data.items() if k not in RUN_EXTRA_KEYS}


def dump_config(cfg: Config, path: Path, extra: dict | None = None) -> None:
    data = to_dict(cfg)
    if extra:
        data = {**extra, **data}
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def replace(cfg: Config, **sections) -> Config:
    return dataclasses.replace(cfg, **sections)
