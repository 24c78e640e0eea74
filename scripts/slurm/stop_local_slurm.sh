#!/bin/bash
# Stop the one-node cluster that start_local_slurm.sh started under $SLURM_LOCAL_BASE
# (default /tmp/mnemo-slurm). Only the processes named in its pid files are signalled (checked against
# the expected program name, so a recycled pid is never hit); its remaining jobs are cancelled first.
# Job state is kept (start_local_slurm.sh --clean wipes it).
set -uo pipefail
BASE=${SLURM_LOCAL_BASE:-/tmp/mnemo-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
pid_of() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] \
           && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] && echo "$p"; }
running() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }  # zombies are gone

if pid_of "$BASE/run/slurmctld.pid" slurmctld >/dev/null && [ -f "$SLURM_CONF" ]; then
  ids=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${ids// }" ]; then
    echo "cancelling jobs: $ids"; timeout 10 scancel $ids 2>/dev/null || true
    for _ in $(seq 40); do [ -z "$(timeout 5 squeue -h -t R,CG -o %A 2>/dev/null)" ] && break; sleep 0.25; done
  fi
fi
for spec in "run/slurmd.pid slurmd" "run/slurmctld.pid slurmctld" "munge/munged.pid munged"; do
  set -- $spec
  pid=$(pid_of "$BASE/$1" "$2") || { echo "$2: not running"; rm -f "$BASE/$1"; continue; }
  kill -TERM "$pid"
  for _ in $(seq 60); do running "$pid" || break; sleep 0.25; done
  if running "$pid"; then kill -KILL "$pid"; echo "$2 ($pid): killed"; else echo "$2 ($pid): stopped"; fi
  rm -f "$BASE/$1"
done
