"""The config sections that belong to no other room: protocol, model, training schedule, evaluation,
cluster resources. Plug-ins and rooms own theirs (a strategy's `Settings`, a selection's, the engine's, the data
loader's); the
top level (`trainer/config/__init__.py`) assembles them all into one `Config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

ARCHS = ("resnet32", "resnet20", "resnet18")


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
    incremental_lr: Optional[float] = None   # lr of phases >= 1 (default: the method's own, else lr: LwM's 0.01)
    lr_milestones: list[int] = field(default_factory=lambda: [80, 120])   # as fractions of 160 epochs
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 0.0               # clip each step's gradient to this global L2 norm (0: off, as the
                                         # papers; configs/glyphs.yaml keeps 1, see docs/parity.md)
    last_batch: str = "even"             # an epoch that does not fill whole batches: even (batches of near-equal
                                         # size, no one-image batch) | short (full batches and a short last one)
    kd_lambda: float = 0.5               # lambda of Eq. 5: lambda*CE + (1-lambda)*KD
    kd_temperature: float = 2.0          # tau of Eq. 1
    finetune_epochs: int = 20            # balanced fine-tune on exemplars only (Algorithm 1 step 18)
    finetune_lr: float = 0.01            # alpha_2, as the paper uses for this step
    log_every: int = 50                  # progress line every N steps
    checkpoint_minutes: float = 5.0      # engine checkpoint inside a stage at the first epoch end this long
                                         # after the last (0: every epoch end); a crash loses at most this much
    warmup_epochs: int = 0
    weight_transfer: bool = False        # incremental phases learn scale/shift over frozen conv weights
    base_from: Optional[str] = None      # run dir whose trained phase-0 model is reused (trainer/run/base_from.py)


@dataclass
class EvalConfig:
    batch_size: int = 256
    nme: bool = True                     # also report nearest-mean-of-exemplars accuracy


@dataclass
class LoggingConfig:
    tensorboard: bool = True             # rank 0 writes RUN/tb/ (TensorBoard event files) beside events.jsonl


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
