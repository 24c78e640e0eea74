"""Every strategy end to end through `mnemo train` on the digits fixture, tiny settings, with random,
herding, optimised and mnemonics (the paper's method, with Eq. 10) exemplar selection and weight transfer each used
at least once.

Runs in-process (`mnemo.cli.main`) with one intra-op thread: the tensors are tiny, and a subprocess per
run would pay the torch/deepspeed import each time.
"""
import json
import logging
import shutil

import pytest
import torch

from mnemo.cli import main

TINY = ["train.epochs=1", "train.base_epochs=1", "train.finetune_epochs=1", "protocol.base_classes=6",
        "protocol.phases=2", "exemplars.per_class=4", "data.image_size=16", "train.batch_size=64",
        "eval.batch_size=128", "data.workers=0", "train.log_every=0",
        "strategy.bic.bias_epochs=2", "strategy.lucir.cbf_epochs=1"]
MNEMONICS = ["exemplars.selection=mnemonics", "exemplars.adjust_old=true", "exemplars.mnemonics.unrolled.inner_steps=1",
             "exemplars.mnemonics.epochs=1", "exemplars.mnemonics.steps_per_epoch=2", "exemplars.folds.epochs=1",
             "exemplars.mnemonics.val_batch_size=16"]
OPTIMISED = ["exemplars.selection=optimised", "exemplars.optimised.unrolled.inner_steps=1",
             "exemplars.optimised.epochs=1", "exemplars.optimised.val_batch_size=16"]

CASES = {
    "lwf-sigmoid-random": ["strategy.name=lwf", "strategy.lwf.loss=sigmoid", "exemplars.selection=random"],
    "icarl-herding": ["strategy.name=icarl", "exemplars.selection=herding"],
    "bic-random": ["strategy.name=bic", "exemplars.selection=random", "strategy.bic.val_fraction=0.25"],
    "bic-arrival-herding": ["strategy.name=bic", "exemplars.selection=herding", "strategy.bic.validation=arrival",
                            "strategy.bic.arrival_per_class=1"],
    "lucir-mnemonics-wt": ["strategy.name=lucir", "train.weight_transfer=true", *MNEMONICS],
    "lwf-optimised": ["strategy.name=lwf", *OPTIMISED],
    "lwm-exemplar-free": ["strategy.name=lwm", "exemplars.per_class=0"],
    "lwm-herding": ["strategy.name=lwm", "exemplars.selection=herding"],
    "finetune": ["strategy.name=finetune"],
    "joint": ["strategy.name=joint"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_strategy_end_to_end(case, tmp_path, digits_shards, one_thread, caplog):
    run = tmp_path / case
    with caplog.at_level(logging.INFO):
        rc = main(["train", "--config", "configs/glyphs.yaml", "--run-dir", str(run), f"data.shards={digits_shards}",
                   *TINY, *CASES[case]])
    assert rc == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "complete" and [p["classes_seen"] for p in m["phases"]] == [6, 8, 10]
    for p in m["phases"]:
        assert 0.0 <= p["accuracy"] <= 100.0 and p["accuracy"] <= p["accuracy_top5"] <= 100.0
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    stages = {e["stage"] for e in events if e["event"] == "epoch"}
    losses = [e["loss"] for e in events if e["event"] == "epoch"]
    assert all(l == l and abs(l) < 1e6 for l in losses)             # finite
    free = "per_class=0" in " ".join(CASES[case]) or case in ("finetune", "joint")
    assert m["phases"][-1]["exemplars_total"] == (0 if free else 40)
    if case.startswith("bic"):
        assert "bias" in stages and "balanced_finetune" not in stages
        # resume rebuilds the per-phase bias layers from the sealed phase and reproduces the last phase
        shutil.rmtree(run / "phases" / "p02")
        assert main(["train", "--config", "configs/glyphs.yaml", "--run-dir", str(run),
                     f"data.shards={digits_shards}", *TINY, *CASES[case]]) == 0
        again = json.loads((run / "metrics.json").read_text())
        strip = lambda p: {k: v for k, v in p.items() if k not in ("wall_s", "timings")}  # noqa: E731
        assert [strip(p) for p in again["phases"]] == [strip(p) for p in m["phases"]]
        if "arrival" in case:            # a run from its phase 0 (train.base_from) sets the same images apart
            based = tmp_path / "based"
            assert main(["train", "--config", "configs/glyphs.yaml", "--run-dir", str(based),
                         f"data.shards={digits_shards}", *TINY, *CASES[case], f"train.base_from={run}"]) == 0
            from_base = json.loads((based / "metrics.json").read_text())
            assert [strip(p) for p in from_base["phases"]] == [strip(p) for p in m["phases"]]
    if case.startswith("lucir"):
        assert "balanced_finetune" in stages
        assert any(e.get("selection") == "mnemonics" and e.get("adjusted") for e in events if e["event"] == "exemplars")
        sd = torch.load(run / "phases" / "p02" / "model.pt", weights_only=True)
        assert not any("parametrizations" in k for k in sd)          # weight transfer folded before sealing
    if case.startswith("lwm"):
        assert any("loss_attention" in e for e in events if e["event"] == "epoch" and e["phase"] > 0)
