"""Which network interface gloo and NCCL open their sockets on: the one that routes to the master address.

Left to themselves, gloo binds to the address the hostname resolves to (127.0.1.1 on many Debian-style hosts,
or a management network) and NCCL to the first interface it likes; on a cluster node either can hang the
start-up or carry the exemplar exchange and the memory broadcast at every resume over the wrong link. Where
the user has not set GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME, the interface is the one the kernel would send
a packet to MASTER_ADDR from (a connected UDP socket: nothing is sent). A multi-node job whose master address
resolves to a loopback address on this host is refused: the other nodes cannot reach it there.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Mapping

import psutil

from core.errors import UserError

VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def _ipv4(host: str) -> str:
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
    except (socket.gaierror, IndexError, UnicodeError) as e:
        raise UserError(f"MASTER_ADDR '{host}' does not resolve to an IPv4 address here ({e}); set it to an "
                        "address every node reaches") from None


def route_interface(host: str, port: int = 29500) -> tuple[str, str]:
    """(interface name, its address) this host sends from to `host`."""
    target = _ipv4(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, port))
        except OSError as e:
            raise UserError(f"no route from this host to MASTER_ADDR {host} ({target}): {e}") from None
        source = s.getsockname()[0]
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == source for a in addrs):
            return name, source
    raise UserError(f"the route to MASTER_ADDR {host} leaves from {source}, which no interface of this host has")


def nodes(env: Mapping[str, str]) -> int:
    for name in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        if env.get(name, "").strip().isdigit():
            return int(env[name])
    return 1


def choose(env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """(the variables to set, a line for the log). Variables the user set are kept; nothing is chosen without
    MASTER_ADDR."""
    unset = [v for v in VARIABLES if not env.get(v, "").strip()]
    host = env.get("MASTER_ADDR", "").strip()
    if not unset or not host:
        kept = ", ".join(f"{v}={env[v]}" for v in VARIABLES if env.get(v, "").strip())
        return {}, f"network interface as set: {kept or 'none (no MASTER_ADDR)'}"
    name, source = route_interface(host, int(env.get("MASTER_PORT", "29500") or 29500))
    if ipaddress.ip_address(source).is_loopback and nodes(env) > 1:
        raise UserError(f"MASTER_ADDR {host} resolves to a loopback address ({_ipv4(host)}) on this host, but the "
                        f"job spans {nodes(env)} nodes that cannot reach it there: set MASTER_ADDR to the first "
                        "node's cluster address, or fix its /etc/hosts entry")
    chosen = dict.fromkeys(unset, name)
    return chosen, (f"network interface {name} ({source}), the route to MASTER_ADDR {host}: "
                    + ", ".join(f"{v}={name}" for v in unset))
