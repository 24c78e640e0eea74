"""The parity harness's own parts, without a peer (CI never runs FACIL or PyCIL): the matched recipe is a valid
mnemo config with the schedule the peer runs, FACIL's accuracy matrix reads as mnemo's metrics, and the table
pairs what has run."""
import json

import numpy as np
import pytest

from analysis.parity.facil import mnemo_metrics
from analysis.parity.recipes import METHODS, PROTOCOLS, Recipe
from analysis.parity.run import table
from trainer.config import load_config
from trainer.run.stage_runners import default_spec
from trainer.methods.strategies.stages import Train


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_recipe_is_the_same_schedule_in_both(method):
    recipe = Recipe("one_class")
    cfg = load_config("configs/glyphs.yaml", recipe.mnemo_overrides(method, seed=2))
    job = recipe.facil_job(method, seed=2)
    assert (cfg.model.arch, cfg.data.image_size, cfg.seed) == (job["network"], job["size"], job["seed"]) == \
        ("resnet32", 32, 2)
    assert (cfg.protocol.base_classes, cfg.protocol.phases, cfg.protocol.num_classes) == (5, 5, 10)
    assert (cfg.train.batch_size, cfg.train.momentum, cfg.train.weight_decay) == \
        (job["batch_size"], job["momentum"], job["weight_decay"])
    m = METHODS[method]
    # FACIL has no balanced fine-tune: only the mnemo-only variants run the product's
    apart = cfg.strategy.bic.arrival_per_class if (cfg.strategy.name, cfg.strategy.bic.validation) == \
        ("bic", "arrival") else 0                             # BiC's set-apart images count in the memory's images
    assert cfg.exemplars.per_class + apart == job["per_class"]
    assert cfg.train.finetune_epochs == (4 if m.mnemo_only and m.peer_runs is None else 0)
    assert cfg.train.grad_clip == 0.0                        # FACIL does not clip (the glyph recipe does)
    assert cfg.train.last_batch == "short"                   # FACIL's loader ends an epoch in a short batch
    even = load_config("configs/glyphs.yaml", recipe.mnemo_overrides(method, seed=2, last_batch="even"))
    assert even.train.last_batch == "even"
    clipped = load_config("configs/glyphs.yaml", recipe.mnemo_overrides(method, seed=2, grad_clip=1.0))
    assert clipped.train.grad_clip == 1.0
    assert job["incremental_lr"] == (m.facil_incremental_lr or m.incremental_lr or job["lr"])
    for phase, epochs, milestones, lr in ((0, job["base_epochs"], job["base_milestones"], job["lr"]),
                                          (1, job["epochs"], job["milestones"], m.incremental_lr or job["lr"])):
        spec = default_spec(Train(), cfg.train, phase)
        assert spec.epochs == epochs and spec.lr == lr
        rates = [spec.lr_at(e) for e in range(epochs)]         # the rate falls tenfold at each milestone
        assert [e for e in range(1, epochs) if rates[e] < rates[e - 1]] == milestones
    if method == "lucir":
        assert cfg.strategy.lucir.cbf_epochs == 0


def test_facil_accuracies_read_as_mnemos_metrics():
    acc = np.array([[0.9, 0, 0], [0.8, 0.6, 0], [0.7, 0.5, 0.4]])      # after task t (row), on task u (column)
    m = mnemo_metrics(acc, [50, 10, 10], 12.0)
    assert [p["accuracy"] for p in m["phases"]] == pytest.approx([90.0, (0.8 * 50 + 0.6 * 10) / 60 * 100,
                                                                  (0.7 * 50 + 0.5 * 10 + 0.4 * 10) / 70 * 100])
    assert m["forgetting"] == pytest.approx(20.0) and m["phases"][2]["accuracy_new"] == pytest.approx(40.0)
    assert m["average_accuracy"] == pytest.approx(np.mean([p["accuracy"] for p in m["phases"]]), abs=1e-3)


def test_the_table_gives_each_implementation_and_their_difference(tmp_path):
    def write(impl, seed, a):
        d = tmp_path / "one_class" / impl / f"bic_s{seed}"
        d.mkdir(parents=True)
        phases = [{"phase": 0, "accuracy": 90.0, "accuracy_base": 90.0, "wall_s": 30.0},
                  {"phase": 1, "accuracy": a, "accuracy_base": a - 5, "wall_s": 30.0}]
        (d / "metrics.json").write_text(json.dumps({"status": "complete", "average_accuracy": (90 + a) / 2,
                                                    "forgetting": 95 - a, "phases": phases}))
    for seed, (a, b) in enumerate([(70, 60), (72, 64), (74, 62)]):
        write("mnemo", seed, a)
        write("facil", seed, b)
    out = table(tmp_path, "one_class", ["bic"])
    assert "| bic | mnemo | 3 | 81.00 ± 1.00 | 72.00 ± 2.00 |" in out
    assert "| bic | facil | 3 | 76.00 ± 1.00 |" in out
    se = (1.0 / 3 + 1.0 / 3) ** 0.5                                       # Welch, Ā's spread 1.00 in both
    assert f"| bic | mnemo − FACIL | | +5.00 ± {se:.2f} | +10.00 ±" in out
    assert set(PROTOCOLS) == {"one_class", "many_one_class", "default"}


def test_a_one_image_tail_joins_the_batch_before_it():
    from analysis.parity.facil import joined_batches
    perm = list(range(257))                                  # 2 batches of 128 and a tail of one
    out = joined_batches(perm, 128)
    assert [len(b) for b in out] == [128, 129] and sum(out, []) == perm
    assert [len(b) for b in joined_batches(list(range(258)), 128)] == [128, 130]      # and a tail of two
    assert [len(b) for b in joined_batches(list(range(259)), 128)] == [128, 128, 3]   # three images stay a batch
    assert [len(b) for b in joined_batches([7], 128)] == [1]                         # a lone batch stays


def test_facil_even_cuts_an_epoch_as_mnemos_default_plan():
    import torch

    from analysis.parity.facil import even_batches
    from data_pipeline.loading.batch_plan import rank_slices
    perm = list(range(1665))                                 # one_class's base images: 13 of 128 and a tail of one
    out = even_batches(perm, 128)
    assert [len(b) for b in out] == [len(s) for s in rank_slices(1665, 128, 0, 1, torch.arange(1665), "even")]
    assert {len(b) for b in out} == {118, 119} and len(out) == 14 and sum(out, []) == perm


def test_each_facil_variant_tells_facil_how_to_cut_its_epochs(tmp_path):
    from analysis.parity.run import command
    for impl, cut in (("facil", "short"), ("facil_join", "join"), ("facil_even", "even")):
        cmd = command(Recipe("one_class"), impl, "lucir", 0, tmp_path, tmp_path)
        assert json.loads(cmd[cmd.index("--recipe") + 1])["batches"] == cut


def test_the_table_gives_each_peer_variant_its_difference(tmp_path):
    for impl, a in (("mnemo", 70.0), ("facil_join", 66.0)):
        for seed in range(2):
            d = tmp_path / "one_class" / impl / f"lwf_s{seed}"
            d.mkdir(parents=True)
            phases = [{"phase": 0, "accuracy": 90.0, "accuracy_base": 90.0, "wall_s": 60.0},
                      {"phase": 1, "accuracy": a + seed, "accuracy_base": a, "wall_s": 60.0}]
            (d / "metrics.json").write_text(json.dumps({"status": "complete", "average_accuracy": a + seed,
                                                        "forgetting": 90 - a, "phases": phases}))
    out = table(tmp_path, "one_class", ["lwf"])
    assert "| lwf | facil_join | 2 | 66.50 ± 0.71 |" in out
    assert "| lwf | mnemo − FACIL, tail joined | | +4.00 ± 0.71 |" in out and "mnemo − FACIL |" not in out


def test_a_mnemo_variant_sits_beside_the_peers_runs_of_its_method(tmp_path):
    """icarl_softmax (mnemo only) is set beside FACIL's iCaRL runs, and icarl's rows never take its runs."""
    for impl, method, a in (("mnemo", "icarl", 10.0), ("mnemo", "icarl_softmax", 70.0), ("facil", "icarl", 66.0)):
        for seed in range(2):
            d = tmp_path / "default" / impl / f"{method}_s{seed}"
            d.mkdir(parents=True)
            phases = [{"phase": 0, "accuracy": a, "accuracy_base": a, "wall_s": 60.0}]
            (d / "metrics.json").write_text(json.dumps({"status": "complete", "average_accuracy": a + seed,
                                                        "forgetting": 5.0, "phases": phases}))
    out = table(tmp_path, "default", ["icarl", "icarl_softmax"])
    assert "| icarl | mnemo | 2 | 10.50 ± 0.71 |" in out and "| icarl_softmax | mnemo | 2 | 70.50 ± 0.71 |" in out
    assert "| icarl_softmax (the peer's icarl) | facil | 2 | 66.50 ± 0.71 |" in out
    assert "| icarl_softmax | mnemo − FACIL | | +4.00 ± 0.71 |" in out and "| icarl | mnemo − FACIL | | -56.00" in out


def test_a_peer_runs_only_the_methods_it_has(tmp_path):
    from analysis.parity.run import jobs
    got = jobs(Recipe("one_class"), ["mnemo_even", "facil_join"], ["lwm", "lwm_ft", "icarl"], [0], tmp_path, tmp_path)
    assert [str(d.relative_to(tmp_path)) for _, d in got] == [
        "one_class/mnemo_even/lwm_s0", "one_class/facil_join/lwm_s0", "one_class/mnemo_even/lwm_ft_s0",
        "one_class/mnemo_even/icarl_s0", "one_class/facil_join/icarl_s0"]
    assert "train.last_batch=even" in got[0][0] and "train.finetune_epochs=4" in got[2][0]
