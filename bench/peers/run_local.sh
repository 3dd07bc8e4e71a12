#!/usr/bin/env bash
# Starts N ranks of bench/peers/ddp_train.py on this machine and waits for all of them.
#
#   bench/peers/run_local.sh N [ddp_train.py args...]
#   bench/peers/run_local.sh 4 --workload fmnist-mlp --hook fp16 --steps 60 --out /tmp/peer
#
# Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 (override: MASTER_ADDR) and a
# free MASTER_PORT (override: MASTER_PORT), OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = 1 unless
# already set (thinwire's launcher passes the same two). GLOO_SOCKET_IFNAME is passed through when
# set; otherwise gloo picks the interface the host name resolves to.
#
# Exit status: 0 when every rank exits 0. When a rank fails, the others are stopped at once (they
# would otherwise wait in a collective until --timeout-s) and the script exits with the failed
# rank's status (128 + signal for a rank killed by a signal, e.g. 134 for an abort). After
# RUN_LOCAL_TIMEOUT_S seconds (default 1800) all ranks are stopped and the status is 124.
# Environment: PYTHON (default /usr/bin/python3: Debian's python3-torch lives there).
set -u

usage() {
  echo "usage: $0 N [ddp_train.py args...]" >&2
  exit 2
}
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
ranks=$1
shift

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-/usr/bin/python3}
timeout_s=${RUN_LOCAL_TIMEOUT_S:-1800}
if [[ ! $timeout_s =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: RUN_LOCAL_TIMEOUT_S must be a positive integer, got '$timeout_s'" >&2
  exit 2
fi

free_port() {
  "$python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
export MASTER_PORT=${MASTER_PORT:-$(free_port)}
export WORLD_SIZE=$ranks
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
if [[ -n ${GLOO_SOCKET_IFNAME:-} ]]; then export GLOO_SOCKET_IFNAME; fi
ulimit -c 0  # an aborting rank (gloo::EnforceNotMet) would otherwise leave a core file

pids=()
declare -A finished=()  # rank -> exit status, once reaped
# Pids of the ranks not yet reaped: once reaped, a rank's pid may belong to another process.
running_pids() {
  local rank
  for ((rank = 0; rank < ${#pids[@]}; ++rank)); do
    [[ -z ${finished[$rank]:-} ]] && echo "${pids[$rank]}"
  done
}
stop_all() {
  local pid alive
  local targets
  mapfile -t targets < <(running_pids)
  ((${#targets[@]})) || return 0
  for pid in "${targets[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${targets[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${targets[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for ((rank = 0; rank < ranks; ++rank)); do
  RANK=$rank LOCAL_RANK=$rank "$python" "$here/ddp_train.py" "$@" &
  pids+=($!)
done

describe() {  # exit status -> words
  local rc=$1
  if ((rc > 128)); then
    echo "status $rc (signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128))))"
  else
    echo "status $rc"
  fi
}

# Reaps every rank that has exited since the last call; sets first_failure to the first non-zero
# status seen (empty while all are fine).
first_failure=
reap() {
  local rank pid rc
  for ((rank = 0; rank < ranks; ++rank)); do
    [[ -n ${finished[$rank]:-} ]] && continue
    pid=${pids[$rank]}
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"
    rc=$?
    finished[$rank]=$rc
    if ((rc != 0)); then
      echo "run_local.sh: rank $rank of $ranks failed with $(describe "$rc")" >&2
      [[ -n $first_failure ]] || first_failure=$rc
    fi
  done
}

deadline=$((SECONDS + timeout_s))
while ((${#finished[@]} < ranks)); do
  reap
  if [[ -n $first_failure ]]; then
    # Ranks often fail together (one aborts, its peers lose the connection): name them all.
    sleep 1
    reap
    echo "run_local.sh: stopping the remaining ranks" >&2
    stop_all
    wait 2>/dev/null
    exit "$first_failure"
  fi
  if ((SECONDS >= deadline)); then
    echo "run_local.sh: ranks still running after ${timeout_s} s (RUN_LOCAL_TIMEOUT_S);" \
      "stopping them" >&2
    stop_all
    wait 2>/dev/null
    exit 124
  fi
  sleep 0.2
done
exit 0
