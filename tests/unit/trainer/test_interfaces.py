"""The interface gloo and NCCL use is the one that routes to the master address (trainer/engine/interfaces.py),
checked against this host's real routing table and interfaces."""
import json
import socket

import psutil
import pytest
from two_ranks import check, two_ranks

from core.errors import UserError
from trainer.engine import interfaces


def _own_addresses() -> dict[str, str]:
    """{IPv4 address: interface} of this host, loopback aside."""
    return {a.address: name for name, addrs in psutil.net_if_addrs().items() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")}


def test_a_loopback_master_routes_through_the_loopback_interface():
    loopback = next(name for name, addrs in psutil.net_if_addrs().items()
                    if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addrs))
    chosen, line = interfaces.choose({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"})
    assert chosen == {"GLOO_SOCKET_IFNAME": loopback, "NCCL_SOCKET_IFNAME": loopback}
    assert f"network interface {loopback} (127.0.0.1)" in line


def test_a_master_on_another_address_routes_through_the_interface_that_holds_the_route():
    own = _own_addresses()
    if not own:
        pytest.skip("this host has no IPv4 address beside loopback")
    address, name = next(iter(own.items()))
    chosen, _ = interfaces.choose({"MASTER_ADDR": address, "SLURM_JOB_NUM_NODES": "2"})
    assert chosen == {"GLOO_SOCKET_IFNAME": name, "NCCL_SOCKET_IFNAME": name}


def test_what_the_user_set_is_kept():
    env = {"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "ib0"}
    chosen, line = interfaces.choose(env)
    assert "GLOO_SOCKET_IFNAME" not in chosen and set(chosen) == {"NCCL_SOCKET_IFNAME"}
    assert interfaces.choose({**env, "NCCL_SOCKET_IFNAME": "ib0"})[0] == {}
    assert interfaces.choose({})[0] == {}


def test_a_multi_node_job_with_a_loopback_master_is_refused_with_the_fix():
    with pytest.raises(UserError, match="loopback address .* spans 2 nodes .*set MASTER_ADDR"):
        interfaces.choose({"MASTER_ADDR": "127.0.1.1", "SLURM_JOB_NUM_NODES": "2"})
    with pytest.raises(UserError, match="MASTER_ADDR 'no-such-host.invalid' does not resolve"):
        interfaces.choose({"MASTER_ADDR": "no-such-host.invalid"})


ROUTED = r"""
import json, os
from trainer.engine import distributed
info = distributed.init("cpu")
print(json.dumps({v: os.environ.get(v) for v in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")}
                 | {"line": distributed.network_line(), "sum": distributed.all_gather_object(info.rank)}))
distributed.shutdown()      # as a run ends: a rank that exits with its gloo group alive may abort (SIGABRT)
"""


def test_a_two_rank_run_meets_over_the_interface_that_routes_to_its_master():
    loopback, _ = interfaces.route_interface("127.0.0.1")
    got = [json.loads(o) for o in check(two_ranks(ROUTED))]
    for g in got:
        assert g["GLOO_SOCKET_IFNAME"] == g["NCCL_SOCKET_IFNAME"] == loopback and g["sum"] == [0, 1]
        assert g["line"].startswith(f"network interface {loopback} (127.0.0.1), the route to MASTER_ADDR 127.0.0.1")
