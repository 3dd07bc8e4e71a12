#!/usr/bin/env bash
# The slurm tier: a real one-node SLURM cluster on this machine runs launch/slurm/train.sbatch.
#
#   tests/slurm/slurm_tier.sh THINWIRE_BINARY [srun|mpirun]
#
# Needs root. Installs Debian's slurm-wlm and munge when they are missing, then starts munged,
# slurmctld and slurmd inside a private network namespace (nothing listens outside it) with a
# configuration in a temporary directory: one node "localhost" with 4 CPU slots, one partition.
# Submits train.sbatch (fmnist-mlp, 4 ranks on the one node, a few steps) with `sbatch --wait`
# and checks: the job's exit code is 0, SLURM records it COMPLETED, the output names 4 ranks
# and ends with the trainer's final line. A second job gets SIGUSR1 (scancel --batch, as
# --signal=B:USR1 would) and must stop with a checkpoint and exit 75. A third job with a bad
# config must fail with a non-zero exit and state FAILED. The daemons are stopped and everything is removed on exit,
# whatever happens. Every wait is bounded.
set -euo pipefail

thinwire=${1:?usage: slurm_tier.sh THINWIRE_BINARY [srun|mpirun]}
launcher=${2:-srun}
root=$(cd "$(dirname "$0")/../.." && pwd)
thinwire=$(cd "$(dirname "$thinwire")" && pwd)/$(basename "$thinwire")

[[ $(id -u) -eq 0 ]] || { echo "slurm_tier.sh: needs root (daemons, network namespace)" >&2; exit 2; }
[[ -x $thinwire ]] || { echo "slurm_tier.sh: '$thinwire' is not an executable" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm_tier.sh: installing slurm-wlm and munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 900 apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null ||
    { timeout 300 apt-get update >/dev/null && timeout 900 apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
fi

work=$(mktemp -d /tmp/twslurm.XXXXXX)
chmod 755 "$work"
netns=twslurm$$
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # Job steps the daemons left behind (they run in the namespace).
  ip netns pids "$netns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$netns" 2>/dev/null || true
  if [[ $rc -ne 0 ]]; then
    for log in "$work"/*.log "$work"/out/*.out; do
      [[ -f $log ]] && { echo "--- $log (last 30 lines)"; tail -30 "$log"; }
    done
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

ip netns add "$netns"
ip -n "$netns" link set lo up
# getaddrinfo(AI_ADDRCONFIG), which the daemons use to bind, finds nothing with loopback alone:
# give the namespace one non-loopback address of its own, on a veth pair whose both ends stay in
# the namespace (reachable from nowhere else).
ip -n "$netns" link add tw0 type veth peer name tw1
ip -n "$netns" addr add 10.254.17.1/24 dev tw0
ip -n "$netns" link set tw0 up
ip -n "$netns" link set tw1 up
in_ns() { ip netns exec "$netns" "$@"; }

# munge: a private key and socket.
mkdir -p "$work/munge"
chmod 700 "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
in_ns munged --force --foreground --socket="$work/munge/socket" --key-file="$work/munge/munge.key" \
  --pid-file="$work/munge/pid" --seed-file="$work/munge/seed" --log-file="$work/munged.log" \
  >>"$work/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/munge/socket ]] && break; sleep 0.1; done
[[ -S $work/munge/socket ]] || { echo "slurm_tier.sh: munged did not start" >&2; exit 1; }

mkdir -p "$work/state" "$work/spool" "$work/out"
cat >"$work/slurm.conf" <<CONF
ClusterName=thinwire-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$work/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
InactiveLimit=0
KillWait=5
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=30 State=UP
CONF
# slurmd sets up its cgroup plugin even with proctrack/linuxproc; name the hierarchy this
# machine mounts (v2 when /sys/fs/cgroup is cgroup2, else v1) instead of autodetecting.
if [[ $(stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]]; then cgroup=cgroup/v2; else cgroup=cgroup/v1; fi
cat >"$work/cgroup.conf" <<CONF
CgroupPlugin=$cgroup
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=no
CONF
export SLURM_CONF=$work/slurm.conf

in_ns slurmctld -D -f "$SLURM_CONF" >>"$work/slurmctld.log" 2>&1 &
pids+=($!)
in_ns slurmd -D -N localhost -f "$SLURM_CONF" >>"$work/slurmd.log" 2>&1 &
pids+=($!)

# The node must register and be idle.
state=
deadline=$((SECONDS + 90))
while ((SECONDS < deadline)); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "slurm_tier.sh: a daemon exited during start-up" >&2; exit 1; }
  done
  state=$(timeout 10 ip netns exec "$netns" sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  [[ $state == idle ]] && break
  sleep 0.5
done
[[ $state == idle ]] || { echo "slurm_tier.sh: node never became idle (state '$state')" >&2; exit 1; }
echo "slurm_tier.sh: one-node cluster up (localhost, 4 CPUs), launcher $launcher"

# Root may run Open MPI only when told so; sbatch forwards the environment to the job.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
submit() {  # submit OUTNAME CONFIG [--set ...]; prints the job id; returns sbatch --wait's code
  local name=$1
  shift
  (cd "$root" && THINWIRE=$thinwire THINWIRE_LAUNCHER=$launcher timeout 600 \
    ip netns exec "$netns" env SLURM_CONF="$SLURM_CONF" sbatch --parsable --wait \
    --nodes=1 --ntasks-per-node=4 --cpus-per-task=1 --time=00:10:00 \
    --output="$work/out/$name-%j.out" launch/slurm/train.sbatch "$@")
}
job_field() {  # job_field ID FIELD
  in_ns scontrol show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

set +e
good_id=$(submit good examples/fmnist_mlp.yaml --set train.steps=30 --set optim.schedule.warmup_steps=5 \
  --set train.eval_every=0 \
  --set train.checkpoint_every=0 --set train.resume=never --set run.progress=false \
  --set run.output_dir="$work/runs")
good_rc=$?
set -e
good_id=${good_id%%;*}
out=$(cat "$work"/out/good-*.out 2>/dev/null || true)
echo "$out" | tail -5
[[ $good_rc -eq 0 ]] || { echo "slurm_tier.sh: FAIL: good job exited $good_rc" >&2; exit 1; }
[[ $(job_field "$good_id" JobState) == COMPLETED ]] ||
  { echo "slurm_tier.sh: FAIL: good job $good_id state $(job_field "$good_id" JobState)" >&2; exit 1; }
[[ $(job_field "$good_id" ExitCode) == 0:0 ]] ||
  { echo "slurm_tier.sh: FAIL: good job exit code $(job_field "$good_id" ExitCode)" >&2; exit 1; }
grep -q "4 rank(s)" <<<"$out" || { echo "slurm_tier.sh: FAIL: the job did not get 4 ranks" >&2; exit 1; }
grep -q "^final test_acc=0\.[0-9]" <<<"$out" ||
  { echo "slurm_tier.sh: FAIL: no final accuracy line in the job output" >&2; exit 1; }
ls "$work"/runs/*/metrics.jsonl >/dev/null 2>&1 ||
  { echo "slurm_tier.sh: FAIL: the job wrote no metrics" >&2; exit 1; }

# A job told to stop, as `#SBATCH --signal=B:USR1@120` in train.sbatch does near the time limit:
# SIGUSR1 to the batch step, whose shell train.sbatch replaced with the launcher (exec), which
# passes it to every rank. Every rank stops at a train.stop_check_every step with a checkpoint and
# the job exits 75 (docs/reliability.md, "Stopping on a signal").
stop_dir=$work/runs/stop
(set +e
  submit stop examples/fmnist_mlp.yaml --set train.steps=100000 --set train.eval_every=0 \
  --set train.checkpoint_every=0 --set train.resume=never --set run.progress=false \
  --set run.name=stop --set run.output_dir="$work/runs" >"$work/stop.id"
  echo $? >"$work/stop.rc") &
deadline=$((SECONDS + 180))
until [[ -s $stop_dir/metrics.jsonl && $(wc -l <"$stop_dir/metrics.jsonl") -ge 2 ]]; do
  ((SECONDS < deadline)) || { echo "slurm_tier.sh: FAIL: the stop job did not train" >&2; exit 1; }
  sleep 0.5
done
stop_id=$(cut -d';' -f1 "$work/stop.id")
[[ -n $stop_id ]] || { echo "slurm_tier.sh: FAIL: no id for the stop job" >&2; exit 1; }
in_ns scancel --batch --signal=USR1 "$stop_id"
deadline=$((SECONDS + 120))
until [[ -s $work/stop.rc ]]; do
  ((SECONDS < deadline)) || { echo "slurm_tier.sh: FAIL: the stop job did not end within 120 s of SIGUSR1" >&2; exit 1; }
  sleep 0.5
done
stop_rc=$(cat "$work/stop.rc")
stop_out=$(cat "$work"/out/stop-*.out 2>/dev/null || true)
[[ $stop_rc -eq 75 ]] || { echo "slurm_tier.sh: FAIL: the stop job exited $stop_rc, not 75" >&2; exit 1; }
stop_step=$(sed -n 's/^stopped at step \([0-9]*\) on a signal.*/\1/p' <<<"$stop_out" | head -1)
[[ -n $stop_step ]] || { echo "slurm_tier.sh: FAIL: no 'stopped at step' line" >&2; exit 1; }
[[ -d $stop_dir/checkpoints/$(printf 'step-%08d' "$stop_step") ]] ||
  { echo "slurm_tier.sh: FAIL: no checkpoint of step $stop_step" >&2; exit 1; }
[[ $(grep -c "SIGUSR1: stopping with a checkpoint" <<<"$stop_out") -eq 4 ]] ||
  { echo "slurm_tier.sh: FAIL: not every rank got SIGUSR1" >&2; exit 1; }

set +e
bad_id=$(submit bad examples/fmnist_mlp.yaml --set optim.lr=-1)
bad_rc=$?
set -e
bad_id=${bad_id%%;*}
[[ $bad_rc -ne 0 ]] || { echo "slurm_tier.sh: FAIL: a job with a bad config exited 0" >&2; exit 1; }
[[ $(job_field "$bad_id" JobState) == FAILED ]] ||
  { echo "slurm_tier.sh: FAIL: bad job $bad_id state $(job_field "$bad_id" JobState)" >&2; exit 1; }
grep -q "optim.lr" "$work"/out/bad-*.out ||
  { echo "slurm_tier.sh: FAIL: the bad job's output does not name the bad key" >&2; exit 1; }

echo "slurm_tier.sh: PASS: job $good_id COMPLETED (exit 0:0, 4 ranks, $launcher); job $stop_id" \
  "stopped on SIGUSR1 at step $stop_step with a checkpoint (exit 75); job $bad_id FAILED as it" \
  "should (exit $bad_rc)"
