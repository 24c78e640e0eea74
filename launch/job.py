"""The callable submitit runs inside every job: set up the process, then `trainer.run.driver.run`.

`TrainJob` is Checkpointable: on a time-out or preemption signal submitit calls `checkpoint()`, which
resubmits the same call; since `run()` always resumes from the newest sealed phase (and the engine
checkpoint of the phase in progress, when there is one), the requeued job simply carries on.
In `chain` mode each job gets `stop_after_phase=k`: it trains whatever is missing up to phase k and
stops, so rerunning any job of the chain is harmless.
"""
from __future__ import annotations

import os

import submitit


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
        from trainer.run.driver import run

        summary = run(cfg, run_dir, stop_after_phase=stop_after_phase)
        return {k: summary[k] for k in ("status", "phases_done", "phases_total", "average_accuracy")}
