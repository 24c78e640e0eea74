"""In-stage checkpoints are timed (trainer/run/checkpoint_clock.py); the dropped epoch count names its successor."""
import time

import pytest

from core.errors import UserError
from trainer.config.migrate import check_current, migrate
from trainer.run.checkpoint_clock import CheckpointClock


def test_a_checkpoint_is_due_once_the_minutes_have_passed_since_the_last():
    clock = CheckpointClock(0.002)                   # 0.12 s
    assert not clock.due()
    time.sleep(0.15)
    assert clock.due() and clock.due()               # due until one is saved
    clock.saved()
    assert not clock.due()
    assert CheckpointClock(0).due()                  # 0: every epoch end


def test_checkpoint_every_is_dropped_from_stored_configs_and_refused_in_new_ones_with_its_successor():
    assert migrate({"train": {"checkpoint_every": 2, "lr": 0.1}}) == {"train": {"lr": 0.1}}
    with pytest.raises(UserError, match="'train.checkpoint_every' was dropped .*train.checkpoint_minutes"):
        check_current({"train": {"checkpoint_every": 2}})
