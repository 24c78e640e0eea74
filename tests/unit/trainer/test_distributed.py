"""trainer/engine/distributed.py and rendezvous.py: where ranks meet, which device each drives, the
long-timeout exemplar exchange, and one resume point for all ranks.

The two-rank tests are real gloo process groups; the device choices are pure functions of the
environment and of the visible device count (the PCI-bus check itself runs in tests/gpu/)."""
import json
import subprocess
import sys

import pytest
import torch
from two_ranks import PRELUDE, ROOT, check, two_ranks

from core.errors import UserError
from trainer.engine import distributed, rendezvous


def test_srun_without_master_variables_meets_at_the_first_node_on_a_port_from_the_job_id(monkeypatch):
    monkeypatch.setattr(rendezvous.shutil, "which", lambda name: None)      # parsed without scontrol
    env = {"SLURM_JOB_NODELIST": "gpu[07-08,11],cpu3", "SLURM_JOB_ID": "123456"}
    got = rendezvous.master_from_slurm(env)
    assert got == {"MASTER_ADDR": "gpu07", "MASTER_PORT": str(20000 + 123456 % 10000)}
    assert 20000 <= rendezvous.job_port("4294967295") < 30000 < 32768      # below the ephemeral range
    assert rendezvous.job_port("991_3") == 20991                            # array job: the array's id
    assert rendezvous.master_from_slurm({**env, "MASTER_ADDR": "h", "MASTER_PORT": "1"}) == {}
    assert rendezvous.master_from_slurm({}) == {}
    assert rendezvous._first_of_nodelist("node1") == "node1"


def test_the_first_host_comes_from_scontrol_where_it_exists(monkeypatch):
    calls = []

    class Done:
        returncode, stdout = 0, "alpha\nbeta\n"

    monkeypatch.setattr(rendezvous.shutil, "which", lambda name: "/usr/bin/scontrol")
    monkeypatch.setattr(rendezvous.subprocess, "run", lambda args, **kw: calls.append(args) or Done())
    assert rendezvous.first_host("odd-list") == "alpha"
    assert calls == [["scontrol", "show", "hostnames", "odd-list"]]


def test_each_local_rank_drives_a_visible_device_of_its_own():
    assert rendezvous.cuda_index(3, 8, visible=8) == 3          # every task sees the node's GPUs
    assert rendezvous.cuda_index(3, 8, visible=1) == 0          # one GPU bound per task
    with pytest.raises(UserError, match="local rank 2 has no GPU of its own: this task sees 2 GPU"):
        rendezvous.cuda_index(2, 4, visible=2)
    assert rendezvous.local_world({"SLURM_TASKS_PER_NODE": "8(x2)"}) == 8
    assert rendezvous.local_world({"LOCAL_WORLD_SIZE": "4", "SLURM_NTASKS_PER_NODE": "8"}) == 4


@pytest.mark.parametrize("env", [{"SLURM_GPUS_ON_NODE": "8"}, {"CUDA_VISIBLE_DEVICES": "0,1"}])
def test_a_job_given_gpus_that_torch_cannot_see_stops_naming_the_driver(monkeypatch, env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for k in ("SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match=rf"the job was given GPUs \({list(env)[0]}=.*sees no CUDA device: .*driver"):
        distributed._device("auto", 0)
    monkeypatch.delenv(list(env)[0])
    assert distributed._device("auto", 0) == torch.device("cpu")         # no GPUs given: CPU, quietly
    with pytest.raises(UserError, match="device=cuda was asked for"):
        distributed._device("cuda", 0)


EXCHANGE = r"""
import time
from trainer.engine import distributed
info = distributed.init("cpu")
if info.rank == 1:
    time.sleep(9)                       # a long class group: longer than the default group's timeout
got = distributed.exchange_objects({"rank": info.rank})
print("exchanged", [g["rank"] for g in got])
if info.rank == 1:
    time.sleep(9)
try:
    distributed.all_gather_object(info.rank)
    print("default group waited")
except Exception as e:
    print("default group timed out:", type(e).__name__)
"""


def test_the_exemplar_exchange_outlives_the_training_collectives_timeout():
    """The default group times out after MNEMO_DIST_TIMEOUT_MIN (here 6 s, room for the two processes to
    meet on a loaded machine): a rank idle for 9 s waits in the exchange group (long timeout), while the
    same wait in the default group fails."""
    out = [r.stdout for r in two_ranks(EXCHANGE, env={"MNEMO_DIST_TIMEOUT_MIN": "0.1"}, timeout=120)]
    assert all("exchanged [0, 1]" in o for o in out), out
    assert "default group timed out" in out[0], out


RESUME = r"""
import json, sys
from trainer.engine import distributed
from trainer.run.storage.run_dir import RunDir
info = distributed.init("cpu")
run = RunDir(sys.argv[1 + info.rank], info)       # each rank its own listing of "the" run directory
point = run.stage_point(2)
print(json.dumps({"sealed": run.latest_sealed(), "problem0": run.phase_problem(0),
                  "point": None if point is None else [point.stage_index, point.epoch, point.extra["memory"]]}))
distributed.shutdown()
"""


def test_ranks_that_see_different_listings_resume_where_rank_0_says(tmp_path):
    from trainer.run.storage import sealed_phases
    from trainer.run.storage.in_phase_checkpoint import _write_pointer

    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    for phase in (0, 1):
        sealed_phases.seal_phase(fresh, phase, {"w": torch.zeros(1)}, {}, {})
    sealed_phases.seal_phase(stale, 0, {"w": torch.zeros(1)}, {}, {})
    _write_pointer(fresh, {"phase": 2, "stage_index": 1, "stage": "train", "epoch": 3, "engine_tag": None},
                   {"memory": "fresh"})
    (stale / "ckpt").mkdir()
    for name in (fresh / "ckpt").iterdir():          # rank 1's listing has the file, not yet the pointer
        if name.name.startswith("extra-"):
            (stale / "ckpt" / name.name).write_bytes(name.read_bytes())
    got = [json.loads(o) for o in check(two_ranks(RESUME, fresh, stale))]
    assert got[0] == got[1] == {"sealed": 1, "problem0": None, "point": [1, 3, "fresh"]}, got


TENSORS = r"""
import hashlib, json
import torch
from trainer.engine import distributed
info = distributed.init("cpu")
g = torch.Generator().manual_seed(info.rank)
mine = {0: torch.rand(3, 3, 8, 8, generator=g).half(), 2: torch.rand(1, 3, 8, 8, generator=g).half()} \
    if info.rank == 0 else {1: torch.rand(5, 3, 8, 8, generator=g).half(), 7: torch.rand(2, 2, generator=g)}
merged, sent = distributed.exchange_tensors(mine)
digest = {k: [list(v.shape), str(v.dtype), hashlib.sha256(v.numpy().tobytes()).hexdigest()[:12]]
          for k, v in sorted(merged.items())}
print(json.dumps({"merged": digest, "sent": sent,
                  "mine_kept": all(torch.equal(merged[k], v) for k, v in mine.items())}))
distributed.shutdown()
"""


def test_exemplar_tensors_travel_as_tensors_from_their_owner(capsys):
    """Each rank broadcasts its own tensors once (a flat buffer per dtype); every rank ends with all of
    them, bit for bit; the bytes each rank sent are what it owns (no pickles, no padding)."""
    got = [json.loads(o) for o in check(two_ranks(TENSORS))]
    assert got[0]["merged"] == got[1]["merged"] and sorted(got[0]["merged"]) == ["0", "1", "2", "7"]
    assert got[0]["merged"]["7"][1] == "torch.float32" and got[0]["merged"]["1"][0] == [5, 3, 8, 8]
    assert all(g["mine_kept"] for g in got)
    assert got[0]["sent"] == (3 + 1) * 3 * 8 * 8 * 2 and got[1]["sent"] == 5 * 3 * 8 * 8 * 2 + 2 * 2 * 4
    with capsys.disabled():
        print(f"\nexemplar exchange bytes sent per rank: {[g['sent'] for g in got]}")


MEMORY = r"""
import hashlib, json, sys
from exemplars.memory import ExemplarMemory
from trainer.engine import distributed
from trainer.run.storage.run_dir import RunDir
info = distributed.init("cpu")
run = RunDir(sys.argv[1 + info.rank], info)       # rank 1's copy has no memory files at all
digest = lambda m: {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()[:12] for k, v in sorted(m.bank.items())}
sealed, inside = ExemplarMemory(), ExemplarMemory()
run.resume(0, {"memory": sealed})
point = run.stage_point(1)
inside.load_state_dict(point.extra["memory"])
print(json.dumps({"sealed": digest(sealed), "in_phase": digest(inside)}))
distributed.shutdown()
"""


def test_on_resume_rank_0_reads_the_exemplar_memory_and_sends_it(tmp_path):
    """The sealed phase's memory.pt and the in-phase memory file are read by rank 0 alone: rank 1's view
    of the run directory lacks both files, and both ranks still end with rank 0's memory, bit for bit."""
    import shutil

    from exemplars.memory import ExemplarMemory
    from trainer.run.storage import sealed_phases
    from trainer.run.storage.in_phase_checkpoint import _write_pointer

    g = torch.Generator().manual_seed(0)
    memory = ExemplarMemory()
    for label in range(3):
        memory.set(label, torch.rand(4, 3, 8, 8, generator=g))
    main, other = tmp_path / "main", tmp_path / "other"
    sealed_phases.seal_phase(main, 0, {"w": torch.zeros(1)}, memory.state_dict(), {})
    later = ExemplarMemory()
    later.load_state_dict(memory.state_dict())
    later.set(3, torch.rand(2, 3, 8, 8, generator=g))
    _write_pointer(main, {"phase": 1, "stage_index": 1, "stage": "train", "epoch": 0, "engine_tag": None}, {},
                   memory=later)
    shutil.copytree(main, other)
    (other / "phases" / "p00" / "memory.pt").unlink()
    for f in (other / "ckpt").glob("memory-*.pt"):
        f.unlink()
    got = [json.loads(o) for o in check(two_ranks(MEMORY, main, other))]
    assert got[0] == got[1], got
    assert len(got[0]["sealed"]) == 3 and len(got[0]["in_phase"]) == 4, got


UPDATE = r"""
import hashlib, json, sys
import torch
from exemplars.codecs.base import build_codec
from exemplars.memory import ExemplarMemory
from exemplars.selections.base import SelectionContext
from core.ranks import DistInfo
from exemplars.update import Collectives, PhaseClasses, update_memory
from trainer.config import load_config
from trainer.engine import distributed
from trainer.methods.models.net import IncrementalNet
world = int(sys.argv[1])
info = distributed.init("cpu") if world > 1 else None
rank = info.rank if info else 0
out = {}
# then: prototype exemplars optimised as the pixels of a memory at half the side, filled to its bytes; last, the
# paper's method with Eq. 10 (its own groups: new classes 2-3 and 4, the old classes 0-1 jointly)
PAPER = ["exemplars.selection=mnemonics", "exemplars.mnemonics.group_size=2", "exemplars.mnemonics.epochs=1",
         "exemplars.mnemonics.val_batch_size=8", "exemplars.mnemonics.unrolled.inner_steps=1",
         "exemplars.adjust_old=true", "exemplars.folds.epochs=1"]
for name, objective, match, codec in (("prototype", "prototype", "features", "raw"),
                                      ("matching", "matching", "features", "raw"),
                                      ("gradients", "matching", "gradients", "raw"),
                                      ("lowres", "prototype", "features", "lowres"),
                                      ("mnemonics", "prototype", "features", "raw")):
    cfg = load_config("configs/glyphs.yaml", ["data.image_size=8", "exemplars.selection=optimised",
                      "exemplars.group_size=1", f"exemplars.optimised.objective={objective}",
                      f"exemplars.optimised.matching.match={match}",
                      "exemplars.optimised.epochs=2", "exemplars.optimised.val_batch_size=8",
                      "exemplars.optimised.matching.embedders=both", "exemplars.optimised.augment=true",
                      "exemplars.optimised.momentum=0.9", "exemplars.per_class=2", f"exemplars.codec={codec}",
                      "exemplars.lowres.encoding=pixels", *(PAPER if name == "mnemonics" else [])])
    torch.manual_seed(0)
    model = IncrementalNet("resnet20", "glyphs")
    model.head.grow(5)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5 * 6, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(5).repeat_interleave(6)
    memory = ExemplarMemory(build_codec(cfg.exemplars), 8)
    for label in (0, 1):
        memory.set(label, images[labels == label][:3].float() / 255)
    group_images = lambda group: (images[torch.isin(labels, torch.tensor(group))],
                                  labels[torch.isin(labels, torch.tensor(group))])
    ctx = SelectionContext(0, 1, torch.device("cpu"), 16, "glyphs", image_size=8)
    comm = Collectives(distributed.exchange_objects, distributed.exchange_tensors) if info else Collectives()
    classes = PhaseClasses([2, 3, 4], [0, 1], group_images, {2: 6, 3: 6, 4: 6}, {l: 150.0 for l in range(5)})
    update_memory(model, memory, classes, cfg.exemplars, ctx, info or DistInfo(), comm)
    out[name] = {k: [len(v), hashlib.sha256(v.numpy().tobytes()).hexdigest()[:12]]
                 for k, v in sorted(memory.bank.items())}
print(json.dumps(out))
if info:
    distributed.shutdown()
"""


def test_new_objectives_give_the_same_exemplars_on_one_and_two_processes():
    """The prototype and matching (of features and of gradients) objectives through the exemplar update, the
    prototype objective through a memory stored at half the side, and the paper's method with Eq. 10: class groups
    spread over two real processes give the memory one process computes, bit for bit (each group's exemplars are a
    function of the model, its images and the context only, whatever rank optimises it); the low-resolution memory
    holds more a class."""
    one = json.loads(check([subprocess.run([sys.executable, "-c", PRELUDE + UPDATE, "1"], cwd=ROOT, text=True,
                                           capture_output=True, timeout=300)])[0])
    two = [json.loads(o) for o in check(two_ranks(UPDATE, "2"))]
    assert two[0] == two[1] == one, (one, two)
    assert len(one["prototype"]) == 5 and len({json.dumps(v) for v in one.values()}) == 5
    # 2 a class; at half the side the bytes of 2 originals (300) hold 6 exemplars of 3·4·4 bytes: all 6 images
    assert all(n == 2 for n, _ in one["prototype"].values()), one
    assert all(one["lowres"][k][0] == 6 for k in ("2", "3", "4")), one

