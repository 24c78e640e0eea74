"""Submit runs to SLURM (or run them locally) through submitit; see docs/slurm.md.

Thin by design: jobs call `trainer.run.driver.run` and nothing else of the trainer. `submit` (chain of phase
jobs or one requeueing job, cancel), `status` (states, errors, ETA), `state` (RUN/launch.json),
`executors` (submitit executors and sbatch parameters), `job` (the callable the jobs run).
"""
