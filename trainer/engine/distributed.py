"""Process-group set-up and collectives: the only module that imports torch.distributed.

One init path for every launcher: plain `mnemo train` (one process), torchrun / the deepspeed
launcher (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), and SLURM (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID; submitit sets the torch variables too; plain `srun` does not, and the rendezvous is
derived from the node list and the job id, trainer/engine/rendezvous.py).

Two groups: the default one (NCCL on GPU, gloo on CPU; timeout MNEMO_DIST_TIMEOUT_MIN, 30 min) for the
training collectives, and a CPU (gloo) group with a long timeout (MNEMO_EXCHANGE_TIMEOUT_MIN, 24 h) for
the exemplar level, where ranks wait for each other's class groups for as long as the slowest one
takes (25-45 minutes per group at the paper's settings on an H100).
"""
from __future__ import annotations

import datetime
import math
import os
import socket
import time

import torch
import torch.distributed as dist

from core.errors import UserError
from core.ranks import DistInfo
from trainer.engine import interfaces, rendezvous

_EXCHANGE: dict = {}                 # the long-timeout CPU group of the current process group
_NETWORK: dict = {}                  # "line": how the sockets' interface was chosen, for the run's log


def _env_int(*names: str, default: int) -> int:
    for n in names:
        if os.environ.get(n, "").strip():
            return int(os.environ[n])
    return default


def _minutes(name: str, default: float) -> datetime.timedelta:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a number of minutes") from None
    return datetime.timedelta(minutes=value)


def _device(device: str, local_rank: int) -> torch.device:
    """The device this process drives: `device` auto | cuda | cpu."""
    if device not in ("auto", "cuda", "cpu"):
        raise UserError(f"device '{device}' is not one of auto, cuda, cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        given = rendezvous.gpus_given(os.environ)
        if device == "cuda" or given:
            why = f"the job was given GPUs ({given})" if given else "device=cuda was asked for"
            raise UserError(f"{why} but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA "
                            f"device: {rendezvous.CUDA_REQUIREMENT}")
        return torch.device("cpu")
    index = rendezvous.cuda_index(local_rank, rendezvous.local_world(os.environ), torch.cuda.device_count())
    return torch.device("cuda", index)


def init(device: str = "auto") -> DistInfo:
    """Initialise (or join) the default process group; safe to call twice."""
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    dev = _device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = _minutes("MNEMO_DIST_TIMEOUT_MIN", 30)
        if world == 1:
            # A lone process needs no rendezvous: an in-memory store, no port, and nothing written to
            # os.environ but LOCAL_RANK, which DeepSpeed insists on (an in-process run must not leak
            # RANK/MASTER_PORT into later subprocesses).
            os.environ.setdefault("LOCAL_RANK", "0")
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        else:
            os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                              **rendezvous.master_from_slurm(os.environ))
            if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
                raise UserError(f"rank {rank} of {world}: MASTER_ADDR/MASTER_PORT are not set and this is no "
                                "SLURM job to derive them from; start the processes with torchrun, srun or "
                                "mnemo train --nproc-per-node")
            chosen, _NETWORK["line"] = interfaces.choose(os.environ)
            os.environ.update(chosen)
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
            _EXCHANGE["group"] = dist.new_group(backend="gloo", timeout=_minutes("MNEMO_EXCHANGE_TIMEOUT_MIN",
                                                                                 24 * 60))
    info = DistInfo(rank, world, local_rank, dev)
    if dev.type == "cuda":
        check_one_rank_per_gpu(info)
    return info


def network_line() -> str | None:
    """How this process chose the interface its gloo and NCCL sockets use (None for a lone process)."""
    return _NETWORK.get("line")


def check_one_rank_per_gpu(info: DistInfo) -> None:
    """Every rank's (host, PCI bus id); two ranks driving one GPU stop the run on every rank."""
    p = torch.cuda.get_device_properties(info.device)
    bus = "{:04x}:{:02x}:{:02x}".format(getattr(p, "pci_domain_id", 0), getattr(p, "pci_bus_id", 0),
                                        getattr(p, "pci_device_id", 0))
    seen: dict = {}
    for rank, where in enumerate(all_gather_object((socket.gethostname(), bus))):
        if where in seen:
            raise UserError(f"ranks {seen[where]} and {rank} both drive GPU {where[1]} on {where[0]}: give each "
                            "task its own GPU (gpus per node >= tasks per node; see docs/cluster.md)")
        seen[where] = rank


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def any_true(flag: bool) -> bool:
    """Whether `flag` holds on any rank; over the CPU (gloo) group, so a GPU run does not wait for its device."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_EXCHANGE.get("group"))
    return bool(t.item())


def wait_for_all(tag: str, give_up, poll_s: float = 0.5) -> bool:
    """Wait until every rank has called wait_for_all(`tag`); False as soon as `give_up()` holds. A wait on the
    store, not in a collective, so a rank waiting for slower ones can still stop (core/stop.py)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return True
    store = dist.distributed_c10d._get_default_store()
    key = f"mnemo/ready/{tag}"
    store.add(key, 1)
    while int(store.add(key, 0)) < dist.get_world_size():
        if give_up():
            return False
        time.sleep(poll_s)
    return True


def rank0_value(obj):
    """Rank 0's `obj` on every rank (a decision all ranks must take alike)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, group=None) -> list:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=group)
    return out


def exchange_objects(obj) -> list:
    """all_gather_object over the long-timeout CPU group: for work of unequal, long duration (the
    exemplar level), where a rank with nothing to do waits for the slowest."""
    return all_gather_object(obj, _EXCHANGE.get("group"))


def exchange_tensors(mine: dict) -> tuple[dict, int]:
    """Every rank's {key: tensor} on every rank, over the long-timeout CPU group, as tensors: the
    shapes and dtypes go first (a small pickle), then each rank broadcasts its tensors as one flat
    buffer per dtype. Returns the merged dict (CPU tensors) and the bytes this rank sent."""
    mine = {k: t.detach().cpu().contiguous() for k, t in mine.items()}
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return mine, 0
    group = _EXCHANGE.get("group")
    layouts = exchange_objects({k: (tuple(t.shape), t.dtype) for k, t in mine.items()})
    merged, sent = {}, 0
    for src, layout in enumerate(layouts):
        for dtype in sorted({d for _, d in layout.values()}, key=str):
            keys = sorted(k for k, (_, d) in layout.items() if d == dtype)
            numels = [math.prod(layout[k][0]) for k in keys]
            if src == dist.get_rank():
                flat = torch.cat([mine[k].reshape(-1) for k in keys])
                sent += flat.numel() * flat.element_size()
            else:
                flat = torch.empty(sum(numels), dtype=dtype)
            dist.broadcast(flat, src=src, group=group)
            for k, part in zip(keys, flat.split(numels)):
                merged[k] = part.view(layout[k][0]).clone() if src != dist.get_rank() else mine[k]
    return merged, sent


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank (a decision one rank takes for all, e.g. the resume point)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


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
        _EXCHANGE.clear()
        dist.destroy_process_group()
