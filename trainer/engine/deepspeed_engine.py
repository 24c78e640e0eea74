"""The Engine: a real DeepSpeed engine around the model; the only module that imports deepspeed.

Algorithms return losses; the engine owns backward, the optimizer step, precision and gradient
accumulation. It is rebuilt per stage (the head grows every phase, and the paper restarts SGD with
a fresh learning-rate schedule each phase). Learning rates are set from outside as a pure function
of (phase, stage, epoch), so no scheduler state exists.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from core.errors import UserError
from core.ranks import DistInfo

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")    # bf16 = autocast on GPU (no loss scaling needed)
GRAD_COMM_DTYPES = ("fp32", "bf16")


@dataclass
class EngineSettings:
    """The `engine` config section."""
    zero_stage: int = 0                  # DeepSpeed ZeRO stage (0, 1 or 2)
    precision: str = "auto"              # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    micro_batch_size: Optional[int] = None   # per-rank micro batch; default: global batch / world
    cudnn_benchmark: bool = True         # GPU: let cuDNN time its convolution algorithms once per shape
    grad_comm_dtype: str = "fp32"        # fp32 | bf16: the dtype gradients are reduced in between ranks (bf16
                                         # halves the bytes; with zero_stage 1/2 the reduction overlaps backward)


def _quiet_deepspeed():
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    import deepspeed
    import deepspeed.ops
    from deepspeed.utils import logger as ds_logger

    if os.environ["DS_ACCELERATOR"] == "cpu":
        # On CPU, DeepSpeed's comm backend JIT-builds a shared-memory all-reduce that only its
        # inference_all_reduce uses; training never calls it. Building it costs ~45 s on a fresh
        # checkout, and a process killed mid-build leaves a lock every later engine waits on forever.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    ds_logger.setLevel(logging.WARNING)
    return deepspeed


def on_device_sync(callback) -> Callable[[], None]:
    """Call `callback()` at every explicit device synchronisation (DeepSpeed's accelerator.synchronize and
    torch.cuda.synchronize) until the returned function undoes it: `mnemo profile syncs` counts them."""
    acc = _quiet_deepspeed().accelerator.get_accelerator()
    original, cuda_sync = type(acc).synchronize, torch.cuda.synchronize

    def synchronize(self, *a, **k):
        callback()
        return original(self, *a, **k)

    type(acc).synchronize = synchronize
    torch.cuda.synchronize = lambda *a, **k: (callback(), cuda_sync(*a, **k))[1]

    def undo():
        type(acc).synchronize = original
        torch.cuda.synchronize = cuda_sync
    return undo


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision != "fp32" and device.type != "cuda":
        log.warning("precision %s needs a GPU; using fp32 on CPU", precision)
        return "fp32"
    return precision


def micro_batch(asked: int | None, per_rank: int, global_batch: int, world: int) -> int:
    """The per-rank micro-batch: `engine.micro_batch_size`, which must divide the per-rank batch."""
    if asked is None:
        return per_rank
    if asked < 1 or per_rank % asked:
        raise UserError(f"engine.micro_batch_size {asked} must divide the per-rank batch {per_rank} "
                        f"(train.batch_size {global_batch} / {world} processes)")
    return asked


class Engine:
    def __init__(self, model: torch.nn.Module, dist: DistInfo, global_batch: int, lr: float, momentum: float,
                 weight_decay: float, settings: EngineSettings | None = None, grad_clip: float = 0.0):
        """`grad_clip`: the global L2 norm each step's gradient is clipped to (0: none). Set explicitly:
        DeepSpeed's own default clips at 1.0."""
        t0 = time.perf_counter()
        settings = settings or EngineSettings()
        deepspeed = _quiet_deepspeed()
        per_rank = max(1, global_batch // dist.world)
        micro = micro_batch(settings.micro_batch_size, per_rank, global_batch, dist.world)
        accum = per_rank // micro
        self.precision = resolve_precision(settings.precision, dist.device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        zero = {"stage": settings.zero_stage}
        if settings.zero_stage in (1, 2):
            # gradients are reduced bucket by bucket while the backward pass still runs
            zero.update(overlap_comm=True, contiguous_gradients=True, reduce_scatter=True)
        config = {
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": accum,
            "train_batch_size": micro * accum * dist.world,
            "zero_optimization": zero,
            "communication_data_type": settings.grad_comm_dtype,
            "gradient_clipping": float(grad_clip),
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
            # its throughput timer synchronises the device in the forward pre-hook and in step(): two
            # full host syncs per step, for a figure the epoch loop measures itself
            "timers": {"throughput": {"enabled": False, "synchronized": False}},
            # Mixed precision runs as torch.autocast around the forward pass (see `autocast`), with the
            # engine in fp32: master weights, the frozen teacher, exemplar optimisation and evaluation
            # all keep fp32 parameters, and bf16 needs no loss scaling.
        }
        self.micro, self.accum = micro, accum
        # Parameters stay in the default layout (the model computes channels_last from its input,
        # trainer/methods/models/net.py): DeepSpeed views them as bytes to broadcast them, and ZeRO 1/2
        # partition them as flat buffers; channels_last parameters break both.
        model.to(memory_format=torch.contiguous_format)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config,
                                                            dist_init_required=False)
        self._module = self.ds.module
        self.device = dist.device
        self.world = dist.world
        self._cudnn_before = torch.backends.cudnn.benchmark
        if self.device.type == "cuda":
            # a stage's batches have one shape (a tail adds one more): the timing pays for itself while the
            # engine trains; the exemplar level and evaluation, whose shapes change, run with it off (close())
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        self.setup_s = time.perf_counter() - t0          # DeepSpeed set-up, reported in RUN/profile.json

    @property
    def module(self) -> torch.nn.Module:
        return self._module

    def close(self) -> None:
        """Release the engine: its forward hooks leave the module (they hold the engine, its optimizer
        and momentum alive, and a deep copy of the module, the next phase's teacher, would carry them
        too), then DeepSpeed's own destroy. The module stays usable; the engine does not."""
        if self.ds is None:
            return
        for name in ("module_forward_pre_hook", "module_forward_post_hook", "first_dataloader_check"):
            handle = getattr(self.ds, name, None)
            if handle is not None:
                handle.remove()
                setattr(self.ds, name, None)
        self.ds.destroy()
        self.ds, self.optimizer = None, None
        torch.backends.cudnn.benchmark = self._cudnn_before

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def save_checkpoint(self, directory, tag: str) -> None:
        self.ds.save_checkpoint(str(directory), tag=tag)

    def load_checkpoint(self, directory, tag: str) -> None:
        path, _ = self.ds.load_checkpoint(str(directory), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {tag} from {directory}")

    def autocast(self):
        """Context for the forward pass: bf16 autocast on GPU, nothing on CPU (fp32)."""
        if self.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def pad_micro_step(self, loss_of) -> None:
        """A micro-step this rank has no images for (an epoch's short tail): every rank still runs a backward
        in every micro-step, because ZeRO-2 reduces gradients inside each backward and ranks that ran
        different numbers of them would wait for each other forever. `loss_of()` computes a loss on some
        image of the batch; it runs with the model in eval mode (no BatchNorm statistics change) and is
        back-propagated times zero, so the gradients and the update are those of the rank's real images."""
        was = self.module.training
        self.module.eval()
        try:
            with self.autocast():
                loss = loss_of()
        finally:
            self.module.train(was)
        self.ds.backward(loss * 0.0)
        self.ds.step()

    def step(self, loss: torch.Tensor, mark=None) -> None:
        """Backward, then the optimizer step; `mark(part)` (trainer.engine.step_timer) is told when each ends."""
        self.ds.backward(loss)
        if mark is not None:
            mark("backward")
        self.ds.step()
        if mark is not None:
            mark("optimizer")
