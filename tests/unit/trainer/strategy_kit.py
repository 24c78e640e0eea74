"""Shared set-up for the strategy unit tests: a tiny config, network, plan, memory and batches."""
from __future__ import annotations

from pathlib import Path

import torch

from core.protocol import make_plan
from exemplars.memory import ExemplarMemory
from trainer.config import load_config
from trainer.methods.strategies.base import Batch, PhaseContext
from trainer.run.session import build_strategy


ROOT = Path(__file__).resolve().parents[3]
PLAN = make_plan(10, 4, 3, 1993)          # phases of 4, 2, 2, 2 classes
CPU = torch.device("cpu")


def make_cfg(name: str, *overrides: str, preset: str = "cifar"):
    return load_config(ROOT / "configs" / "glyphs.yaml",
                       [f"strategy.name={name}", "model.arch=resnet20", f"data.preset={preset}",
                        "data.image_size=16", "eval.batch_size=64", *overrides])


def fill_memory(memory: ExemplarMemory, labels, per_class: int = 3, seed: int = 0) -> ExemplarMemory:
    g = torch.Generator().manual_seed(seed)
    for label in labels:
        if label not in memory.bank:
            memory.set(label, torch.rand(per_class, 3, 16, 16, generator=g))
    return memory


def batch(labels, n: int = 8, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)[torch.randint(len(labels), (n,), generator=g)]
    return Batch(torch.rand(n, 3, 16, 16, generator=g), y)


def perturb(module: torch.nn.Module, scale: float = 0.05, seed: int = 2) -> None:
    """Move every parameter a little (so a student differs from its teacher)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p) * scale * (p.abs().mean() + 1e-3))


def start(name: str, phase: int, *overrides: str, preset: str = "cifar", memory: ExemplarMemory | None = None):
    """A strategy with its model advanced to the start of `phase` (earlier phases: no training, the
    memory filled with random exemplars). Returns (strategy, model, ctx)."""
    torch.manual_seed(0)
    cfg = make_cfg(name, *overrides, preset=preset)
    strategy = build_strategy(cfg)
    model = strategy.build_model()
    memory = memory if memory is not None else ExemplarMemory()
    ctx = None
    for ph in range(phase + 1):
        if ctx is not None:
            fill_memory(memory, PLAN.new_labels(ph - 1))
            strategy.after_phase(ctx)
            perturb(model, seed=ph)
        ctx = PhaseContext(ph, PLAN, model, CPU, memory)
        strategy.before_phase(ctx)
    return strategy, model, ctx


def stage_of(strategy, ctx, name: str):
    """The strategy's stage object called `name` in the phase of `ctx`."""
    stages = {s.name: s for s in strategy.stages(ctx)}
    assert name in stages, (name, list(stages))
    return stages[name]
