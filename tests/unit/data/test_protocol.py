import numpy as np
import pytest

from core.errors import UserError
from core.protocol import make_plan


def test_order_is_numpy_randomstate_1993():
    plan = make_plan(100, 50, 5)
    assert list(plan.order) == np.random.RandomState(1993).permutation(100).tolist()
    assert plan.phase_sizes == (50, 10, 10, 10, 10, 10)
    assert plan.new_labels(1) == list(range(50, 60))
    assert plan.old_labels(2) == list(range(60)) and plan.seen_labels(2) == list(range(70))
    assert plan.class_ids([0, 1]) == list(plan.order[:2])


def test_imagenet_subset_is_first_100_of_the_seed_1993_order():
    plan = make_plan(1000, 50, 10, num_classes=100)
    assert list(plan.order) == np.random.RandomState(1993).permutation(1000)[:100].tolist()
    assert plan.phase_sizes == (50,) + (5,) * 10


def test_indivisible_protocol_is_a_clear_error():
    with pytest.raises(UserError, match="do not split into protocol.phases=4"):
        make_plan(62, 32, 4)
    with pytest.raises(UserError, match="base_classes"):
        make_plan(10, 20, 1)
    assert make_plan(62, 12, 25).phase_sizes == (12,) + (2,) * 25
