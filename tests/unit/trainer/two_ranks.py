"""Run a snippet of Python as two real local processes (gloo), the torch launcher variables set."""
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PRELUDE = f"import sys, torch\nsys.path.insert(0, {str(ROOT)!r})\ntorch.set_num_threads(1)\n"


def two_ranks(code: str, *args: str, env: dict | None = None, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Both ranks' results (returncode, stdout, stderr); `code` reads its arguments from sys.argv[1:]."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + code, *map(str, args)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, **(env or {}), "RANK": str(r), "WORLD_SIZE": "2",
                                   "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for r in range(2)]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def check(results: list[subprocess.CompletedProcess]) -> list[str]:
    """Each rank's stdout; fails with both ranks' stderr if either failed."""
    assert all(r.returncode == 0 for r in results), "\n".join(f"rank {i}: {r.stderr[-3000:]}"
                                                             for i, r in enumerate(results))
    return [r.stdout for r in results]
