
import torch

from exemplars.memory import ExemplarMemory, quota
from exemplars.selections.herding import herding_order
from exemplars.selections.random import random_order


def test_herding_greedy_matches_brute_force_each_step():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(12, 5, generator=g)
    order = herding_order(f, 4).tolist()
    fn = torch.nn.functional.normalize(f.double(), dim=1)
    mu = fn.mean(0)
    chosen = []
    for k in range(1, 5):
        best = min((i for i in range(12) if i not in chosen),
                   key=lambda i: float(((mu - (fn[chosen].sum(0) + fn[i]) / k) ** 2).sum()))
        chosen.append(best)
    assert order == chosen
    assert len(set(order)) == 4


def test_herding_first_pick_is_closest_to_mean_and_is_deterministic():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.9]])
    assert herding_order(f, 1).tolist() == [2]
    assert herding_order(f, 4).tolist() == herding_order(f.clone(), 4).tolist()
    assert sorted(herding_order(f, 10).tolist()) == [0, 1, 2, 3]


def test_random_order_depends_only_on_generator():
    a = random_order(50, 10, torch.Generator().manual_seed(1))
    b = random_order(50, 10, torch.Generator().manual_seed(1))
    c = random_order(50, 10, torch.Generator().manual_seed(2))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist() and len(set(a.tolist())) == 10


def test_quota_modes_and_trimming_keeps_priority_order():
    assert quota(20, None, 50) == 20
    assert quota(20, 2000, 50) == 40 and quota(20, 2000, 100) == 20
    mem = ExemplarMemory()
    mem.set(0, torch.arange(5).float().view(5, 1, 1, 1).expand(5, 3, 2, 2) / 10)
    mem.set(1, torch.ones(5, 3, 2, 2))
    mem.trim(3)
    assert len(mem) == 6
    assert torch.allclose(mem.get(0)[:, 0, 0, 0].float(), torch.tensor([0, 0.1, 0.2]), atol=1e-3)
    x, y = mem.tensors()
    assert x.dtype == torch.float32 and y.tolist() == [0, 0, 0, 1, 1, 1]
    sd = mem.state_dict()
    other = ExemplarMemory()
    other.load_state_dict(sd)
    assert all(torch.equal(other.get(k), mem.get(k)) for k in (0, 1))
