"""In-phase checkpoints do not rewrite the exemplar memory every epoch: it has a file of its own,
written again only when the memory changed. Prints the bytes written per checkpoint."""
import torch

from exemplars.memory import ExemplarMemory
from trainer.run.storage.in_phase_checkpoint import _write_pointer, load


def _memory(classes: int, per_class: int) -> ExemplarMemory:
    m = ExemplarMemory()
    for label in range(classes):
        m.set(label, torch.rand(per_class, 3, 32, 32))
    return m


def test_epoch_checkpoints_write_the_memory_once_and_resume_it(tmp_path, capsys):
    sizes = {}
    for classes in (10, 100):                              # 10x the memory
        run, memory = tmp_path / f"run{classes}", _memory(classes, 20)
        written = [_write_pointer(run, {"phase": 1, "stage_index": 0, "stage": "train", "epoch": e,
                                        "engine_tag": None}, {"strategy": {"step": e}}, memory) for e in range(3)]
        sizes[classes] = written
        assert written[0]["memory"] > 20 * 3 * 32 * 32 * 2 * classes * 0.9      # fp16 pixels, once
        assert [w["memory"] for w in written[1:]] == [0, 0]                    # unchanged: not rewritten
        point = load(run, 1)
        assert point.epoch == 2 and point.extra["strategy"] == {"step": 2}
        assert all(torch.equal(point.extra["memory"]["bank"][k], memory.bank[k]) for k in memory.bank)
        memory.set(0, torch.rand(20, 3, 32, 32))                              # the exemplar level changed it
        again = _write_pointer(run, {"phase": 1, "stage_index": 1, "stage": "exemplars", "epoch": None,
                                     "engine_tag": None}, {}, memory)
        assert again["memory"] > 0 and len(list((run / "ckpt").glob("memory-*.pt"))) == 1
    # an epoch's checkpoint costs the same whatever the memory's size
    assert sizes[10][1]["extra"] == sizes[100][1]["extra"] < 2000
    with capsys.disabled():
        print(f"\nin-phase checkpoint bytes per epoch: memory of 200 / 2000 exemplars -> "
              f"{[sum(w.values()) for w in sizes[10]]} / {[sum(w.values()) for w in sizes[100]]}")
