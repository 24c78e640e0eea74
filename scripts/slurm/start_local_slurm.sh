#!/bin/bash
# Start a real one-node SLURM cluster on this machine for tests and local trials (Debian's packages:
# munged + slurmctld + slurmd as root, no systemd, no accounting). Idempotent; installs the packages
# with apt-get when they are missing. Based on the measured recipe in the project's shared notes.
#
# Usage: start_local_slurm.sh [--clean | --install-only]
#   --clean         wipe the job state of a previous start (job ids restart at 1)
#   --install-only  install the packages (and the sacct stand-in), start nothing
# Environment:
#   SLURM_LOCAL_BASE  state, config, logs, pid files (default /tmp/mnemo-slurm)
#   SLURM_LOCAL_PORT  slurmctld port; slurmd uses PORT+1 (default 6817): distinct bases + ports
#                     give independent clusters side by side
#   SLURM_LOCAL_CGROUP=1  confine jobs with cgroups (cpuset + memory); default proctrack/linuxproc
#   SLURM_LOCAL_WAIT  seconds to wait for the node to come up (default 60)
# Clients find the cluster through SLURM_CONF=$SLURM_LOCAL_BASE/etc/slurm.conf (printed at the end);
# /etc/slurm/slurm.conf is linked to it too when that file is not someone else's.
set -euo pipefail
BASE=${SLURM_LOCAL_BASE:-/tmp/mnemo-slurm}
PORT=${SLURM_LOCAL_PORT:-6817}
CTLD_HOST=$(hostname -s)                        # slurmctld insists on its own short hostname
NODE=${SLURM_LOCAL_NODE:-$CTLD_HOST}            # any name; slurmd is started with -N
CONF=$BASE/etc/slurm.conf
MSOCK=$BASE/munge/munge.socket.2
HERE=$(cd "$(dirname "$0")" && pwd)
log() { echo "[start_local_slurm] $*" >&2; }

# --- 1. packages ---------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  # without systemd the packages' postinst cannot start the daemons ("policy-rc.d denied"): harmless
  $SUDO apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# sacct stand-in: accounting is off, so the real sacct fails and submitit (which polls sacct for job
# states) would never see a job end. It answers from the controller's job records via squeue.
SHIM=/usr/local/bin/sacct
# Replaced only when absent (or a dangling link) or one of these stand-ins itself.
if [ ! -e "$SHIM" ] || grep -qE 'mnemo-sacct-shim|slurmB-sacct-shim' "$SHIM" 2>/dev/null; then
  rm -f "$SHIM.tmp"
  cat > "$SHIM.tmp" <<'SHIMEOF'
#!/bin/bash
# mnemo-sacct-shim (scripts/slurm/start_local_slurm.sh): when SLURM accounting is disabled, emulate
# `sacct -o F1,F2 --parsable2 [-n] -j ID[,ID...]` from the controller's job records (squeue; kept
# MinJobAge seconds after a job ends). Anything else goes to the real sacct unchanged.
REAL=/usr/bin/sacct
err=$(mktemp); out=$("$REAL" "$@" 2>"$err"); rc=$?
if [ $rc -eq 0 ] || ! grep -qi 'accounting storage is disabled' "$err"; then
  cat "$err" >&2; rm -f "$err"; [ -n "$out" ] && printf '%s\n' "$out"; exit $rc
fi
rm -f "$err"
fields="JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"; jobs=""; header=1
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--format) fields="$2"; shift ;;
    --format=*) fields="${1#*=}" ;;
    -j|--jobs) jobs="${jobs:+$jobs,}$2"; shift ;;
    --jobs=*) jobs="${jobs:+$jobs,}${1#*=}" ;;
    -n|--noheader) header=0 ;;
    *) ;;  # -P/--parsable2/-X/-a: the output is always parsable2, allocations only
  esac; shift
done
fmt=""
IFS=',' read -ra F <<<"$fields"
for f in "${F[@]}"; do
  f="${f%%%*}"
  case "${f,,}" in
    jobid|jobidraw) c=%i ;; state) c=%T ;; nodelist) c=%N ;; jobname) c=%j ;; partition) c=%P ;;
    account) c=%a ;; alloccpus|ncpus) c=%C ;; user) c=%u ;; elapsed) c=%M ;; start) c=%S ;;
    end) c=%e ;; submit) c=%V ;; reason) c=%r ;; *) c="" ;;
  esac
  fmt="${fmt:+$fmt|}$c"
done
[ $header -eq 1 ] && (IFS='|'; echo "${F[*]%%%*}")
args=(-h -a -r --states=all -o "$fmt")
[ -n "$jobs" ] && args+=(-j "$jobs")
squeue "${args[@]}" 2>/dev/null | sed 's/ *| */|/g'
exit 0
SHIMEOF
  chmod 755 "$SHIM.tmp" && rm -f "$SHIM" && mv -f "$SHIM.tmp" "$SHIM"
else
  log "WARNING: $SHIM exists and is not the mnemo sacct stand-in; submitit may not see jobs end"
fi
[ "${1:-}" = "--install-only" ] && { log "packages present"; exit 0; }

# --- 2. dirs, munge key, config ----------------------------------------------------------------
if [ "${1:-}" = "--clean" ]; then
  "$HERE/stop_local_slurm.sh" >/dev/null 2>&1 || true
  rm -rf "$BASE/state" "$BASE/log"
fi
mkdir -p "$BASE"/{etc,state/ctld,state/d,log,run,munge}
chmod 755 "$BASE" "$BASE/munge"        # munged refuses a socket dir that is not executable by all
[ -s "$BASE/munge/munge.key" ] || dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$BASE/munge/munge.key"

HW=$(slurmd -C | head -1)                       # this machine's CPUs/sockets/cores/memory
get() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(get CPUs); MEM=$(( $(get RealMemory) * 95 / 100 ))
if [ "${SLURM_LOCAL_CGROUP:-0}" = 1 ]; then
  PROCTRACK=proctrack/cgroup; TASK=task/cgroup,task/affinity
  printf 'CgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=yes\n' > "$BASE/etc/cgroup.conf"
else
  PROCTRACK=proctrack/linuxproc; TASK=task/none; rm -f "$BASE/etc/cgroup.conf"
fi
cat > "$CONF.tmp" <<EOF
# generated by scripts/slurm/start_local_slurm.sh -- one-node test cluster on localhost
ClusterName=mnemolocal
SlurmctldHost=$CTLD_HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it starts again (default 120 s)
AuthInfo=socket=$MSOCK,cred_expire=10
StateSaveLocation=$BASE/state/ctld
SlurmdSpoolDir=$BASE/state/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=$PROCTRACK
TaskPlugin=$TASK
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# start batch jobs at once (default batch_sched_delay=3 s) and retry pending/requeued jobs every second
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# keep finished jobs visible to squeue/scontrol (and so to the sacct stand-in) for an hour
MinJobAge=3600
MaxJobCount=100000
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 $(sed -n 's/.*\(CPUs=.*ThreadsPerCore=[0-9]*\).*/\1/p' <<<"$HW") RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$(( MEM / CPUS ))
EOF
mv "$CONF.tmp" "$CONF"
export SLURM_CONF=$CONF
mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  ln -sfn "$CONF" /etc/slurm/slurm.conf
fi

# --- 3. daemons (each only if its pid file does not name a live one) ------------------------------
# alive PIDFILE NAME: the pid file names a live (non-zombie) process called NAME
alive() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] \
          && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; }
await() { for _ in $(seq 100); do alive "$1" "$2" && return 0; sleep 0.1; done
          log "$2 failed to start; last log lines:"; tail -5 "$3" >&2; exit 1; }
if ! alive "$BASE/munge/munged.pid" munged; then
  log "starting munged"
  munged --key-file="$BASE/munge/munge.key" --socket="$MSOCK" --pid-file="$BASE/munge/munged.pid" \
         --log-file="$BASE/munge/munged.log" --seed-file="$BASE/munge/munged.seed" --force
  await "$BASE/munge/munged.pid" munged "$BASE/munge/munged.log"
fi
if ! alive "$BASE/run/slurmctld.pid" slurmctld; then
  log "starting slurmctld (port $PORT)"; slurmctld -f "$CONF"
  await "$BASE/run/slurmctld.pid" slurmctld "$BASE/log/slurmctld.log"
else
  timeout 10 scontrol reconfigure >/dev/null 2>&1 || true
fi
if ! alive "$BASE/run/slurmd.pid" slurmd; then
  log "starting slurmd (node $NODE, port $((PORT + 1)))"; slurmd -f "$CONF" -N "$NODE"
  await "$BASE/run/slurmd.pid" slurmd "$BASE/log/slurmd.log"
fi

# --- 4. wait for the node (every wait is capped: a hung daemon must not hang the caller) --------
deadline=$(( SECONDS + ${SLURM_LOCAL_WAIT:-60} )); st=""
while [ $SECONDS -lt $deadline ]; do
  st=$(timeout 5 sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
  case "$st" in
    idle|mix|alloc) break ;;
    down*|drain*|drng*) timeout 5 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
case "$st" in idle|mix|alloc) ;; *) log "node $NODE not ready (state '$st'); see $BASE/log"; exit 1 ;; esac
log "up: node $NODE ($CPUS CPUs, $MEM MB) state $st; logs in $BASE/log"
echo "export SLURM_CONF=$CONF"
