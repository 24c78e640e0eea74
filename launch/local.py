"""`mnemo train --nproc-per-node N`: start N local worker processes with the torch launcher variables.

Each worker runs the same `mnemo train` command (without --nproc-per-node) with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set, and an even share of the CPU threads. If one worker
fails, the others are stopped; the exit status is the first failure's.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    port = str(_free_port())
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        env.setdefault("OMP_NUM_THREADS", threads)
        procs.append(subprocess.Popen([sys.executable, "-m", "mnemo.cli", *argv], env=env))

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                status = failed[0].returncode
                stop()
                break
            time.sleep(0.2)
        for p in procs:
            p.wait()
            if status == 0 and p.returncode != 0:
                status = p.returncode
    except KeyboardInterrupt:
        stop()
        for p in procs:
            p.wait()
        status = 130
    finally:
        signal.signal(signal.SIGTERM, old)
    return status if status >= 0 else 128 - status
