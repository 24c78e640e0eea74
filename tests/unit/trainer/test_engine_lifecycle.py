"""Engines are closed, not dropped: their forward hooks leave the module, the engine itself is freed,
and the next phase's teacher (a deep copy of the module) carries none of them. On CPU, three rebuilds
without closing left 3+3 hooks and kept every engine (with its optimizer and momentum) alive."""
import gc
import weakref

import torch
from torch import nn

from trainer.engine import distributed
from trainer.engine.deepspeed_engine import Engine
from trainer.methods.strategies.base import frozen_copy


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


def test_hooks_and_live_engines_stay_constant_over_five_rebuilds():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before, alive, counts = _hooks(model), [], []
    for _ in range(5):
        with Engine(model, distributed.init("cpu"), 8, 0.1, 0.9, 0.0) as engine:
            assert _hooks(model) > before                      # DeepSpeed's hooks while it trains
            assert not engine.ds.tput_timer.config.enabled     # its throughput timer would sync twice a step
            engine.step(nn.functional.cross_entropy(engine.module(torch.rand(8, 4)), torch.randint(0, 2, (8,))))
            alive.append(weakref.ref(engine.ds))
            inside = _hooks(frozen_copy(model))     # a copy made while an engine is open
        counts.append(_hooks(model))
        del engine
        gc.collect()
    assert counts == [before] * 5, counts
    assert [ref() is None for ref in alive] == [True] * 5      # no engine outlives its stage
    assert inside > before                           # ... carries its hooks; the teacher is copied later
    assert _hooks(frozen_copy(model)) == before


def test_on_cpu_deepspeed_builds_no_shared_memory_op(tmp_path, monkeypatch):
    """DeepSpeed's CPU shared-memory all-reduce serves its inference only: the engine stops it from
    being JIT-built (45 s on a fresh checkout; a kill mid-build leaves a lock later engines wait on)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    from deepspeed.comm import comm as ds_comm

    with Engine(nn.Linear(4, 2), distributed.init("cpu"), 8, 0.1, 0.9, 0.0):
        assert ds_comm.cdb is not None and ds_comm.cdb.shm_comm_op is None
    assert not (tmp_path / "ext").exists()
