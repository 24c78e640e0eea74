"""The callable submitit runs inside every job: set up the process, then `trainer.run.driver.run`.

`TrainJob` is Checkpointable. On a time-out or preemption signal (USR2, `launch.signal_delay_s` before the
limit) every rank records a stop request (core/stop.py) in place of submitit's handler, which runs on rank 0
only and cannot run while rank 0 waits in a collective: the run stops at its next safe point (a step boundary all
ranks agree on, a class group's end, a sealed phase), saved there. Then rank 0 hands over to submitit's handler,
which resubmits the same call and requeues the job; the other ranks wait for the requeue to end them. Since
`run()` always resumes from the newest sealed phase and the checkpoint of the phase in progress, the requeued
job carries on from the step it stopped at.
In `chain` mode each job gets `stop_after_phase=k`: it trains whatever is missing up to phase k and
stops, so rerunning any job of the chain is harmless.
"""
from __future__ import annotations

import logging
import os
import signal
import time

import submitit

log = logging.getLogger("mnemo")


def _export_distributed_env() -> None:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from the job, for trainer.engine.distributed.init()."""
    env = submitit.JobEnvironment()
    if env.cluster == "debug":        # in-process: the trainer's single-process defaults apply
        return
    # CUDA_VISIBLE_DEVICES stays as the job got it: the trainer picks cuda:LOCAL_RANK itself.
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def _limit_threads() -> None:
    """One task = its --cpus-per-task threads (torch would otherwise use every core of the node)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(int(cpus))


class TrainJob(submitit.helpers.Checkpointable):
    """`TrainJob()(cfg, run_dir, stop_after_phase)` runs (resumes) the run inside a job."""

    def __call__(self, cfg, run_dir: str, stop_after_phase: int | None = None) -> dict:
        _export_distributed_env()
        _limit_threads()
        from core import stop
        from trainer.run.driver import run

        signum = submitit.JobEnvironment._usr_sig()
        requeue = stop.arm(signum)                    # submitit's handler: rank 0 calls it once the run stopped
        try:
            summary = run(cfg, run_dir, stop_after_phase=stop_after_phase)
        except stop.StopRequested as e:
            log.warning("%s: requeueing", e)
            if submitit.JobEnvironment().global_rank == 0 and callable(requeue):
                requeue(signum, None)                  # requeues the job and exits
            time.sleep(float(os.environ.get("MNEMO_REQUEUE_WAIT_S", "600")))   # the requeue ends this task
            raise
        return {k: summary[k] for k in ("status", "phases_done", "phases_total", "average_accuracy")}
