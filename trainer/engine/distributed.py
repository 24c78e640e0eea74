"""Process-group set-up and collectives: the only module that imports torch.distributed.

One init path for every launcher: plain `mnemo train` (one process), torchrun / the deepspeed
launcher (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), and SLURM (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID; submitit's environment sets the torch variables too).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str, default: int) -> int:
    for n in names:
        if os.environ.get(n, "").strip():
            return int(os.environ[n])
    return default


def init(device: str = "auto") -> DistInfo:
    """Initialise (or join) the default process group; safe to call twice."""
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        timeout = datetime.timedelta(minutes=30)
        if world == 1:
            # A lone process needs no rendezvous: an in-memory store, no port, and nothing written to
            # os.environ but LOCAL_RANK, which DeepSpeed insists on (an in-process run must not leak
            # RANK/MASTER_PORT into later subprocesses).
            os.environ.setdefault("LOCAL_RANK", "0")
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        else:
            os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    return DistInfo(rank, world, local_rank, dev)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_buffers(model: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, in place.

    DeepSpeed keeps parameters in sync but not buffers: each rank's BatchNorm sees only its own part of
    the global batch, so running statistics drift apart. Averaging them after every epoch (timm's
    distribute_bn with reduce) gives every rank the same model, close to 1-process statistics.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(dist.get_world_size())


def shutdown() -> None:
    """Destroy the process group (the end of a run; a later `init` starts a new one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
