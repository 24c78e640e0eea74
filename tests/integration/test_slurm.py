"""`mnemo launch` against a real one-node SLURM cluster on localhost (scripts/slurm/start_local_slurm.sh).

The cluster is started once per session with a fresh state directory on free ports (SLURM_CONF points
the clients at it), and stopped at the end. Every run directory (and so its submitit folder) is new.
Three runs go in at once at the start of the module, so their jobs overlap with each other and with
the direct `mnemo train` they are compared with:
  chain     one job per phase, afterok dependencies
  requeue   one job, preempted (submitit's _interrupt: SIGTERM + USR2 through scancel) in phase 1
  failing   phase 1 reads a corrupt training shard: the chain stops there, `resume` after the fix
Runs are deterministic on CPU with one thread, so metrics.json must equal the direct run's except
for wall times.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "scripts" / "slurm" / "start_local_slurm.sh"
STOP = ROOT / "scripts" / "slurm" / "stop_local_slurm.sh"
FAST = ["train.epochs=1", "train.base_epochs=1", "train.finetune_epochs=1", "protocol.base_classes=4",
        "protocol.phases=2", "exemplars.per_class=5", "data.image_size=16", "train.batch_size=32",
        "eval.batch_size=64"]
JOB_FLAGS = ["--cpus-per-task", "1", "--time-min", "30"]
WAIT_S = 420


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 60000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free consecutive ports")


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    """A real SLURM cluster for this session; skips (visibly) only where it cannot start."""
    base = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_LOCAL_BASE": str(base), "SLURM_LOCAL_PORT": str(_free_port_pair())}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(["bash", str(START), "--clean"], env=env, capture_output=True, text=True, timeout=600)
        ok, out = r.returncode == 0, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired:
        ok, out = False, "start_local_slurm.sh timed out"
    if not ok:
        msg = f"local SLURM could not start ({START.name}): {out[-600:]}"
        if os.environ.get("MNEMO_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    print(f"\nlocal SLURM up in {time.perf_counter() - t0:.1f}s (port {env['SLURM_LOCAL_PORT']})")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(base / "etc" / "slurm.conf")      # sbatch/squeue/... of this session
    yield base
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved
    subprocess.run(["bash", str(STOP)], env=env, capture_output=True, text=True, timeout=120)


def mnemo(*args: str) -> int:
    """`mnemo ...` in this process (the same parser and code as the console script)."""
    from mnemo.cli import main

    return main([str(a) for a in args])


def launch(run: Path, shards: Path, *extra: str) -> int:
    return mnemo("launch", "--config", "configs/glyphs.yaml", "--run-dir", run, *JOB_FLAGS,
                 f"data.shards={shards}", *FAST, *extra)


def report(run: Path) -> dict:
    from launch.status import report as status_report

    return status_report(run)


def wait_for(run: Path, done, what: str, timeout: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = report(run)
        if done(r):
            return r
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((run / "submitit").glob("*.err")))
            pytest.fail(f"{run.name}: not {what} after {timeout}s: {json.dumps(r, indent=1)}\n{logs}")
        time.sleep(1.0)


def settled(r: dict) -> bool:
    """No job pending or running, and SLURM knows every job's state."""
    return bool(r["jobs"]) and r["active"] == 0 and all(j["state"] != "UNKNOWN" for j in r["jobs"])


def comparable(metrics: dict) -> dict:
    m = json.loads(json.dumps(metrics))
    for p in m["phases"]:
        p.pop("wall_s", None)
        p.pop("timings", None)
    return m


def corrupt_first_image(shard: Path) -> None:
    """Zero the bytes of the first image inside a tar shard; its size (the manifest's check) stays."""
    with tarfile.open(shard) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith((".png", ".jpg")))
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"\0" * member.size)


def _interrupt_after_phase0(run: Path, job_id_box: list, log: dict) -> None:
    """Preempt the requeue job as soon as phase 0 is sealed (so inside phase 1)."""
    import submitit

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not (run / "phases" / "p00" / "DONE").exists():
        time.sleep(0.1)
    if job_id_box and (run / "phases" / "p00" / "DONE").exists():
        submitit.SlurmJob(folder=run / "submitit", job_id=job_id_box[0])._interrupt()   # SIGTERM, then USR2
        log["interrupted"] = True
    log["sealed_at_interrupt"] = sorted(p.name for p in (run / "phases").glob("p*") if (p / "DONE").exists())


@pytest.fixture(scope="module")
def runs(local_slurm, digits_shards, tmp_path_factory):
    from core.protocol import make_plan

    root = tmp_path_factory.mktemp("slurm_runs")
    t0 = time.perf_counter()
    # one thread everywhere (jobs inherit the submitting environment): identical arithmetic in all runs
    saved_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    env = dict(os.environ)
    reference = subprocess.Popen(
        [sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir",
         str(root / "direct"), f"data.shards={digits_shards}", *FAST],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # requeue: one job, preempted by a watcher thread as soon as phase 0 is sealed
    assert launch(root / "requeue", digits_shards, "--mode", "requeue") == 0
    box = [json.loads((root / "requeue" / "launch.json").read_text())["jobs"][0]["job_id"]]
    preempt = {}
    watcher = threading.Thread(target=_interrupt_after_phase0, args=(root / "requeue", box, preempt), daemon=True)
    watcher.start()

    assert launch(root / "chain", digits_shards) == 0

    # failing: a copy of the shards where one training image of a class that phase 1 adds is corrupt
    bad = root / "shards_copy"
    shutil.copytree(digits_shards, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    plan = make_plan(len(manifest["classes"]), 4, 2)
    victim = plan.class_ids(plan.new_labels(1))[0]
    shard = bad / next(s["path"] for s in manifest["splits"]["train"] if int(s["class"]) == victim)
    pristine = shard.read_bytes()
    corrupt_first_image(shard)
    assert launch(root / "failing", bad) == 0
    if saved_threads is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = saved_threads

    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    yield {"root": root, "direct": json.loads((root / "direct" / "metrics.json").read_text()),
           "preempt": preempt, "watcher": watcher, "failing_shard": (shard, pristine, victim), "t0": t0}
    print(f"\nSLURM runs: {time.perf_counter() - t0:.1f}s from first submission to the last check")


def test_chain_of_phase_jobs_matches_direct_train(runs):
    run = runs["root"] / "chain"
    r = wait_for(run, settled, "finished")
    assert r["status"] == "complete", r
    assert [(j["phase"], j["state"]) for j in r["jobs"]] == [(0, "COMPLETED"), (1, "COMPLETED"), (2, "COMPLETED")]
    got = json.loads((run / "metrics.json").read_text())
    assert got["status"] == "complete" and got["phases_done"] == 3
    assert comparable(got) == comparable(runs["direct"])
    # each phase ran in its own job (a fresh process resuming from the sealed phase before it)
    starts = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["phase"] for e in starts if e["event"] == "start"] == [0, 1, 2]
    sh = (run / "submitit" / f"{r['jobs'][1]['job_id']}_submission.sh").read_text()
    assert f"--dependency=afterok:{r['jobs'][0]['job_id']}" in sh and "--kill-on-invalid-dep=yes" in sh


def test_requeue_job_preempted_mid_run_resumes_and_matches(runs):
    run = runs["root"] / "requeue"
    r = wait_for(run, settled, "finished")
    runs["watcher"].join(timeout=5)
    pre = runs["preempt"]
    assert pre.get("interrupted") and "p02" not in pre["sealed_at_interrupt"], pre     # before the run ended
    assert r["status"] == "complete", r
    (job,) = r["jobs"]
    assert job["state"] == "COMPLETED" and int(job.get("restarts", 0)) >= 1, job
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    starts = [e["phase"] for e in events if e["event"] == "start"]
    # the requeued job resumed after the last sealed phase: the phase it was preempted in (usually 1)
    assert len(starts) == 2 and starts[0] == 0 and starts[1] == len(pre["sealed_at_interrupt"]), (starts, pre)
    log = (run / "submitit" / f"{job['job_id']}_0_log.err").read_text()
    assert "this job is preempted" in log and "Requeued job" in log
    assert comparable(json.loads((run / "metrics.json").read_text())) == comparable(runs["direct"])


def test_failed_phase_stops_the_chain_status_says_why_and_resume_completes(runs, capsys):
    run = runs["root"] / "failing"
    shard, pristine, victim = runs["failing_shard"]
    r = wait_for(run, settled, "stopped")
    assert r["status"] == "failed" and r["phases_done"] == 1, r
    assert [(j["phase"], j["state"]) for j in r["jobs"]] == [(0, "COMPLETED"), (1, "FAILED"), (2, "CANCELLED")]
    err = r["last_error"]
    assert err["phase"] == 1 and err["job_id"] == r["jobs"][1]["job_id"]
    assert "UserError: cannot read image" in err["message"] and shard.name in err["message"], err
    capsys.readouterr()
    assert mnemo("launch", "status", run) == 0
    text = capsys.readouterr().out
    assert "failed, 1/3 phases sealed" in text and "last error: phase 1" in text and "ETA:" in text, text

    shard.write_bytes(pristine)                              # the fix: a good copy of the shard
    assert mnemo("launch", "resume", run) == 0
    r = wait_for(run, lambda r: settled(r) and r["jobs"][-1]["state"] not in ("UNKNOWN",), "resumed")
    assert r["status"] == "complete", r
    assert [(j["phase"], j["state"]) for j in r["jobs"][3:]] == [(1, "COMPLETED"), (2, "COMPLETED")]
    assert comparable(json.loads((run / "metrics.json").read_text())) == comparable(runs["direct"])
    assert mnemo("launch", "resume", run) == 0               # nothing left: submits nothing
    assert len(report(run)["jobs"]) == 5


def test_cancel_stops_pending_jobs(local_slurm, digits_shards, tmp_path):
    run = tmp_path / "cancelled"
    assert launch(run, digits_shards, "--sbatch", "begin=now+1hour") == 0     # held back: stays PENDING
    r = report(run)
    assert [j["state"] for j in r["jobs"]] == ["PENDING"] * 3, r
    assert mnemo("launch", "cancel", run) == 0
    r = wait_for(run, settled, "cancelled", timeout=60)
    assert {j["state"] for j in r["jobs"]} == {"CANCELLED"} and r["status"] == "stopped", r


def test_a_job_sbatch_refuses_is_a_one_line_user_error(local_slurm, digits_shards, tmp_path, capsys):
    run = tmp_path / "refused"
    assert launch(run, digits_shards, "--partition", "nosuchpartition") == 2
    err = capsys.readouterr().err.strip().splitlines()         # sbatch's own lines, then mnemo's one line
    assert err[-1].startswith("mnemo: error: sbatch refused the job for phase 0: ") and "partition" in err[-1], err
    assert json.loads((run / "launch.json").read_text())["jobs"] == []


# ---- multi-process runs on the cluster: plain srun, torchrun inside srun, a rank killed ---------------
DDP = [*FAST, "protocol.phases=1"]


def _train_argv(run: Path, shards: Path) -> list[str]:
    return ["-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir", str(run),
            f"data.shards={shards}", *DDP]


def _one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ddp_reference(digits_shards, tmp_path_factory) -> dict:
    """`mnemo train --nproc-per-node 2` outside SLURM: what every two-rank way of starting must equal."""
    run = tmp_path_factory.mktemp("ddp_ref") / "run"
    r = subprocess.run([sys.executable, *_train_argv(run, digits_shards), "--nproc-per-node", "2"], cwd=ROOT,
                       env=_one_thread_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return comparable(json.loads((run / "metrics.json").read_text()))


@pytest.mark.parametrize("how", ["srun", "torchrun"])
def test_srun_and_torchrun_on_the_cluster_equal_nproc_per_node(local_slurm, digits_shards, ddp_reference,
                                                                 tmp_path, how):
    """Plain `srun -n 2 mnemo train` sets only SLURM_* (the rendezvous comes from the node list and the
    job id); torchrun inside a one-task step sets the torch variables itself."""
    run = tmp_path / "run"
    if how == "srun":
        argv = ["srun", "-n", "2", "-c", "1", "--kill-on-bad-exit=1", sys.executable, *_train_argv(run, digits_shards)]
    else:
        argv = ["srun", "-n", "1", "-c", "2", sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", *_train_argv(run, digits_shards)]
    env = {k: v for k, v in _one_thread_env().items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "start")["world"] == 2
    assert comparable(json.loads((run / "metrics.json").read_text())) == ddp_reference


def test_a_rank_killed_mid_phase_ends_the_job_at_once_and_the_run_resumes(local_slurm, digits_shards, ddp_reference,
                                                                          tmp_path):
    run, once = tmp_path / "run", tmp_path / "fault-fired"
    fault = {"MNEMO_FAULT": "train:1:0", "MNEMO_FAULT_RANK": "1", "MNEMO_FAULT_ONCE": str(once),
             "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in fault}
    os.environ.update(fault)                      # the job takes the submitting environment
    try:
        assert mnemo("launch", "--config", "configs/glyphs.yaml", "--run-dir", run, *JOB_FLAGS, "--tasks-per-node",
                     "2", f"data.shards={digits_shards}", *DDP) == 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    r = wait_for(run, settled, "stopped")
    ended = time.time()
    assert [(j["phase"], j["state"]) for j in r["jobs"]] == [(0, "COMPLETED"), (1, "FAILED")], r
    # rank 1 died after its first epoch of phase 1; the job ended within seconds (srun's
    # --kill-on-bad-exit stops rank 0, which on NCCL would otherwise wait out the 30-minute timeout)
    assert once.exists() and ended - once.stat().st_mtime < 60, ended - once.stat().st_mtime
    sh = (run / "submitit" / f"{r['jobs'][1]['job_id']}_submission.sh").read_text()
    assert "--kill-on-bad-exit=1" in sh
    assert mnemo("launch", "resume", run) == 0
    r = wait_for(run, lambda r: settled(r) and len(r["jobs"]) == 3, "resumed")
    assert r["status"] == "complete" and r["jobs"][2]["state"] == "COMPLETED", r
    assert comparable(json.loads((run / "metrics.json").read_text())) == ddp_reference


def test_a_time_limit_signal_to_a_two_rank_requeue_job_stops_at_a_safe_point_and_the_job_ends_as_uninterrupted(
        local_slurm, digits_shards, tmp_path):
    """USR2 through scancel (SLURM's warning before a time limit, submitit's _interrupt) to both tasks of a two-rank
    requeue-mode job once phase 1 has trained an epoch: every rank records the request, the ranks agree at the
    next step boundary (checked every step here), save it and stop; rank 0 hands over to submitit, which requeues
    the job; the requeued job resumes there, and metrics.json equals an uninterrupted two-rank run's. Where the
    stop lands depends on when the signal arrives (mid-epoch, normally); test_resume_and_ddp.py pins one step."""
    keys = [*DDP, "train.epochs=3"]
    ref = tmp_path / "ref"
    r = subprocess.run([sys.executable, "-m", "mnemo.cli", "train", "--config", "configs/glyphs.yaml", "--run-dir",
                        str(ref), f"data.shards={digits_shards}", *keys, "--nproc-per-node", "2"], cwd=ROOT,
                       env=_one_thread_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1", "MNEMO_STOP_CHECK_STEPS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                        # the job takes the submitting environment
    try:
        assert mnemo("launch", "--config", "configs/glyphs.yaml", "--run-dir", run, *JOB_FLAGS, "--tasks-per-node",
                     "2", "--mode", "requeue", f"data.shards={digits_shards}", *keys) == 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    job_id = json.loads((run / "launch.json").read_text())["jobs"][0]["job_id"]
    deadline = time.monotonic() + WAIT_S

    def trained_an_epoch_of_phase_1() -> bool:
        path = run / "events.jsonl"
        return path.is_file() and any(e.get("event") == "epoch" and e.get("phase") == 1 and e.get("stage") == "train"
                                      for e in map(json.loads, path.read_text().splitlines()))
    while not trained_an_epoch_of_phase_1():
        assert time.monotonic() < deadline, report(run)
        time.sleep(0.05)
    import submitit

    submitit.SlurmJob(folder=run / "submitit", job_id=job_id)._interrupt()          # SIGTERM, then USR2
    r = wait_for(run, settled, "finished")
    assert r["status"] == "complete", r
    (job,) = r["jobs"]
    assert job["state"] == "COMPLETED" and int(job.get("restarts", 0)) >= 1, job
    log = (run / "submitit" / f"{job_id}_0_log.err").read_text()
    assert "this job is preempted" in log and "Requeued job" in log and ": requeueing" in log
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    stops = [e for e in events if e["event"] == "stop"]
    assert len(stops) == 1 and "SIGUSR2" in stops[0]["why"], stops
    print(f"\nstopped at {stops[0]}")
    assert [e["phase"] for e in events if e["event"] == "start"] == [0, 1]          # the requeued job went on
    assert comparable(json.loads((run / "metrics.json").read_text())) == \
        comparable(json.loads((ref / "metrics.json").read_text()))
