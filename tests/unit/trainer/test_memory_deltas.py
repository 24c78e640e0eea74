"""A sealed phase stores only what changed in the exemplar memory (sealed_phases.memory_delta), and every phase's
whole memory is still read back (by resume, `mnemo report` and the analysis tools, all through load_file).
A 25-phase toy run prints its memory bytes against whole memories per phase."""
import json
import shutil

import pytest
import torch

from core.ranks import SINGLE
from exemplars.memory import ExemplarMemory, quota
from trainer.run.storage import checkpoint_io, sealed_phases
from trainer.run.storage.run_dir import RunDir, Value

BASE, PHASES, NEW, SIZE = 10, 25, 2, 8


def _phase(memory: ExemplarMemory, phase: int, g: torch.Generator, budget: int | None, adjust: bool) -> None:
    """One phase's exemplar level: new classes' exemplars, Eq. 10 on two old classes (`adjust`), trimming."""
    first = 0 if phase == 0 else BASE + NEW * (phase - 1)
    new = range(first, BASE if phase == 0 else first + NEW)
    old = [label for label in memory.labels() if label not in new]
    for label in new:
        memory.set(label, torch.rand(20, 3, SIZE, SIZE, generator=g))
    if adjust and old:
        for label in old[:2]:
            memory.set(label, (memory.get(label).float() + 0.01).clamp(0, 1))
    if budget is not None:
        memory.trim(quota(20, budget, len(memory.labels())))


def _seal_all(run_dir, phases, memory, g, budget, adjust, start=0):
    states = {"model": torch.nn.Linear(2, 2), "memory": memory, "strategy": Value({})}
    run = RunDir(run_dir, SINGLE)
    if start:
        run.resume(start - 1, states)
    banks = {}
    for phase in range(start, phases):
        _phase(memory, phase, g, budget, adjust)
        run.seal(phase, states, {"num_classes": len(memory.labels())})
        banks[phase] = {k: v.clone() for k, v in memory.bank.items()}
    return banks


def _same(sd: dict, bank: dict) -> bool:
    return sorted(sd["bank"]) == sorted(bank) and all(torch.equal(sd["bank"][k], bank[k]) for k in bank)


@pytest.mark.parametrize("budget, adjust", [(None, False), (None, True), (400, False)],
                         ids=["per-class", "adjusted-old", "fixed-budget"])
def test_a_25_phase_run_stores_each_exemplar_about_once_and_reads_every_phase_whole(tmp_path, capsys, budget, adjust):
    g = torch.Generator().manual_seed(0)
    banks = _seal_all(tmp_path / "run", PHASES, ExemplarMemory(), g, budget, adjust)
    for phase, bank in banks.items():
        assert _same(sealed_phases.load_file(tmp_path / "run", phase, "memory.pt"), bank), phase
    stored = sum((sealed_phases.phase_dir(tmp_path / "run", p) / "memory.pt").stat().st_size for p in banks)
    whole = 0
    for phase, bank in banks.items():                      # what sealing the whole memory each phase wrote
        checkpoint_io.save(tmp_path / "whole.pt", {"bank": bank})
        whole += (tmp_path / "whole.pt").stat().st_size
    with capsys.disabled():
        print(f"\n{PHASES}-phase toy run ({budget=}, {adjust=}): sealed memory {stored:,} bytes, "
              f"whole memory per phase {whole:,} bytes ({whole / stored:.1f}x)")
    assert stored < whole / (3 if adjust else 5)


def test_a_resumed_run_seals_on_the_phase_it_resumed_and_an_old_whole_memory_stays_readable(tmp_path):
    g = torch.Generator().manual_seed(1)
    run = tmp_path / "run"
    first = _seal_all(run, 5, ExemplarMemory(), g, None, True)
    # phase 4 as an older mnemo sealed it: its whole memory, no base
    whole = {"bank": first[4]}
    p4 = sealed_phases.phase_dir(run, 4)
    marker = p4 / "DONE"
    checkpoint_io.save(p4 / "memory.pt", whole)
    done = json.loads(marker.read_text())
    done["files"]["memory.pt"] = (p4 / "memory.pt").stat().st_size
    done.pop("memory_from_phase")
    marker.write_text(json.dumps(done))
    assert sealed_phases.latest_sealed(run) == 4
    memory = ExemplarMemory()
    later = _seal_all(run, 9, memory, g, None, True, start=5)        # a fresh process resuming after phase 4
    assert checkpoint_io.load(sealed_phases.phase_dir(run, 5) / "memory.pt")["from_phase"] == 4
    for phase, bank in {**first, **later}.items():
        assert _same(sealed_phases.load_file(run, phase, "memory.pt"), bank), phase


def test_a_phase_whose_memory_builds_on_a_damaged_one_is_damaged_too(tmp_path, caplog):
    run = tmp_path / "run"
    _seal_all(run, 6, ExemplarMemory(), torch.Generator().manual_seed(2), None, False)
    assert sealed_phases.latest_sealed(run) == 5
    (sealed_phases.phase_dir(run, 3) / "memory.pt").unlink()
    assert sealed_phases.phase_problem(run, 5) == ("its memory builds on phase 4, where its memory builds on phase 3, "
                                                  "where memory.pt is missing")
    assert sealed_phases.latest_sealed(run) == 2 and "falling back" in caplog.text
    shutil.rmtree(sealed_phases.phase_dir(run, 0))
    assert sealed_phases.latest_sealed(run) is None
