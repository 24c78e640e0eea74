import pytest
import torch

from trainer.methods.losses import kd_loss
from trainer.run.metrics import MetricsLog, average_accuracy, forgetting


def test_average_accuracy_and_forgetting_follow_the_paper():
    phases = [{"accuracy": 80.0, "accuracy_base": 80.0}, {"accuracy": 60.0, "accuracy_base": 70.0},
              {"accuracy": 40.0, "accuracy_base": 50.0}]
    assert average_accuracy(phases) == pytest.approx(60.0)      # mean over all N+1 phases
    assert forgetting(phases) == pytest.approx(30.0)             # A^Z_0 - A^Z_N on D_0^test
    log = MetricsLog(3)
    for p in phases[:2]:
        log.add({"phase": 0, "classes_seen": 1, "accuracy_old": None, "accuracy_new": 1.0, **p}, [1.0], None)
    s = log.summary()
    assert s["status"] == "running" and s["phases_done"] == 2
    assert "Ā" in log.table()


def test_kd_has_zero_gradient_when_student_equals_teacher():
    logits = torch.randn(6, 5, requires_grad=True)
    loss = kd_loss(logits, logits.detach().clone(), tau=2.0)
    (g,) = torch.autograd.grad(loss, logits)
    assert g.abs().max() < 1e-6
    other = kd_loss(torch.randn(6, 5, requires_grad=True), logits.detach(), 2.0)
    assert other > loss


def test_config_guard_names_changed_keys_and_accepts_keys_added_later(tmp_path):
    import yaml

    from core.errors import UserError
    from trainer.config import Config
    from trainer.run.storage.sealed_phases import guard_config

    defaults = Config().to_dict()
    old = Config().to_dict()
    del old["strategy"]["lwm"]                         # written by an older version without this key
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    guard_config(tmp_path, Config().to_dict(), defaults)          # same run: accepted
    new = Config().to_dict()
    new["protocol"]["phases"] = 10
    new["strategy"]["lwm"]["beta"] = 5.0
    try:
        guard_config(tmp_path, new, defaults)
        raise AssertionError("should refuse")
    except UserError as e:
        beta = defaults["strategy"]["lwm"]["beta"]       # a key the old file lacks compares to its default
        assert "protocol.phases (5 -> 10)" in str(e) and f"strategy.lwm.beta ({beta} -> 5.0)" in str(e)


def test_config_guard_keeps_a_resumed_run_on_its_exemplar_level(tmp_path):
    """The exemplar level is guarded too: a run started before the recommended objective became the default of
    selection=mnemonics (its config.yaml lacks `objective`, so it ran the paper's) is refused when the same command
    now means another objective, naming the keys to restore; given them it resumes. Keys that change how a
    result is computed but not the result (activation checkpointing) may change."""
    import yaml

    from core.errors import UserError
    from exemplars.mnemonics import PAPER
    from trainer.config import Config, stored_defaults
    from trainer.run.storage.sealed_phases import guard_config

    old = Config().to_dict()
    old["exemplars"]["selection"] = "mnemonics"
    for key in ("objective", "momentum", "augment", "adjust_epochs", "adjust_steps_per_epoch", "adjust_lr_halve_every"):
        del old["exemplars"]["mnemonics"][key]          # written before these keys existed
    old["exemplars"]["mnemonics"].update(lr=10.0, init="random", epochs=10, steps_per_epoch=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    now = Config().to_dict()
    now["exemplars"]["selection"] = "mnemonics"
    now["exemplars"]["mnemonics"]["lr"] = 10.0
    with pytest.raises(UserError) as e:
        guard_config(tmp_path, now, stored_defaults())
    for diff in ("exemplars.mnemonics.objective ('unrolled' -> 'prototype')", "exemplars.mnemonics.init ('random' ->",
                 "exemplars.mnemonics.momentum (0.0 -> 0.9)", "exemplars.mnemonics.adjust_epochs (None -> 50)"):
        assert diff in str(e.value)
    restored = Config().to_dict()
    restored["exemplars"]["selection"] = "mnemonics"
    restored["exemplars"]["mnemonics"].update({**PAPER, "lr": 10.0, "epochs": 10, "lr_halve_every": 4})
    restored["exemplars"]["mnemonics"]["checkpoint"] = not restored["exemplars"]["mnemonics"]["checkpoint"]
    guard_config(tmp_path, restored, stored_defaults())                  # accepted
    restored["exemplars"]["per_class"] = 10
    with pytest.raises(UserError, match=r"exemplars.per_class \(20 -> 10\)"):
        guard_config(tmp_path, restored, stored_defaults())
