#!/usr/bin/env bash
# The netem tier: real multi-host launches over emulated networks (bench/netem/). Needs root and
# iproute2; scripts/test.sh runs this tier only where a network namespace can be created.
#   tests/netem/netem_test.sh CASE THINWIRE_BINARY
# Cases:
#   multihost_matches_single_host  4 hosts (one namespace and one shaped port each), mpirun with a
#                                  hostfile and the namespace rsh agent: the checkpoint after 8
#                                  steps must be byte-identical to the same job on one host
#   cleanup_after_failure          a failing, and a terminated, command leave no namespace, veth
#                                  or bridge behind and pass the failure on
#   shaping_is_applied             tbf of the requested rate on both directions of every port, and
#                                  on the shared fabric's loopback
#   refuses_without_root           an unprivileged user gets a clear message and exit status 2
#   tcp_multihost_matches_single_host  comm.backend tcp, no MPI: 4 plain `thinwire train`
#                                  processes, one per host namespace, meet through the store on
#                                  host 1 and each must pick its own eth0 address to listen on; the
#                                  checkpoint after 8 steps must equal the same 4 processes on one
#                                  host byte for byte
set -euo pipefail
case_name=$1
thinwire=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
work=$(mktemp -d /tmp/thinwire-netem-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# What the harness may create, listed from the root namespace: namespaces named twnet*, and (never
# expected) veth or bridge devices in the root namespace itself.
network_objects() {
  { ip netns list | awk '{print $1}' | grep '^twnet' || true; } | sort
  ip -o link show type veth | awk -F': ' '{print "veth " $2}' | sort
  ip -o link show type bridge | awk -F': ' '{print "bridge " $2}' | sort
}

expect_no_leftovers() {
  local before=$1 after
  after=$(network_objects)
  [[ $after == "$before" ]] || fail "network objects left behind: before [$before] after [$after]"
}

# expect_same_run WHAT: the step-8 checkpoints of the job under $work/single and $work/multi are
# byte-identical, file by file, and so are their logged training losses (left in multi_losses).
expect_same_run() {
  local what=$1 file single_losses
  local single=$work/single/netem/checkpoints/step-00000008
  local multi=$work/multi/netem/checkpoints/step-00000008
  for file in shared.twc rank-0000.twc rank-0001.twc rank-0002.twc rank-0003.twc; do
    [[ -s $single/$file && -s $multi/$file ]] || fail "checkpoint file $file missing"
    cmp "$single/$file" "$multi/$file" || fail "$file differs between the 1-host and the $what run"
  done
  single_losses=$(grep '"kind":"train"' "$work/single/netem/metrics.jsonl" | sed 's/.*"loss":\([^,]*\).*/\1/')
  multi_losses=$(grep '"kind":"train"' "$work/multi/netem/metrics.jsonl" | sed 's/.*"loss":\([^,]*\).*/\1/')
  [[ -n $single_losses && $single_losses == "$multi_losses" ]] ||
    fail "training losses differ: [$single_losses] vs [$multi_losses]"
}

job=(examples/fmnist_mlp.yaml -n 4 --set train.steps=8 --set optim.schedule.warmup_steps=2
  --set model.hidden=[256] --set run.log_every=2 --set train.eval_every=0 --set train.checkpoint_every=0
  --set train.resume=never --set run.progress=false --set run.name=netem
  --set comm.bucket_mb=0.5 --set comm.allreduce=ring)
# Buckets above and below the ring threshold (64 KiB). comm.allreduce: ring on both runs: on one
# host `auto` would pick MPI_Allreduce (another summation order), and the point is that moving the
# same job onto four hosts changes nothing.

case $case_name in
  multihost_matches_single_host)
    before=$(network_objects)
    timeout 300 "$thinwire" launch "${job[@]}" --set "run.output_dir=$work/single" >"$work/single.log" 2>&1 ||
      { cat "$work/single.log"; fail "the single-host run failed"; }
    timeout 300 bench/netem/per_host.sh --hosts 4 --rate 200mbit -- bash -c '
      "$0" launch "$@" --hostfile "$TW_NETEM_HOSTFILE" --set launch.transport=tcp \
        --set launch.tcp_interface=eth0 \
        --set "launch.extra_args=[--mca,plm_rsh_agent,$TW_NETEM_RSH_AGENT,--mca,oob_tcp_if_include,eth0,--mca,rtc,^hwloc]"
    ' "$thinwire" "${job[@]}" --set "run.output_dir=$work/multi" >"$work/multi.log" 2>&1 ||
      { cat "$work/multi.log"; fail "the 4-host run failed"; }
    cat "$work/multi.log"
    grep -q -- "--hostfile" "$work/multi.log" || fail "the 4-host run did not use a hostfile"
    expect_same_run "4-host"
    expect_no_leftovers "$before"
    echo "PASS: 4-host checkpoint is byte-identical to the 1-host one; losses: $(echo $multi_losses)" ;;

  cleanup_after_failure)
    before=$(network_objects)
    status=0
    bench/netem/per_host.sh --hosts 3 --rate 100mbit -- bash -c 'exit 7' || status=$?
    ((status == 7)) || fail "per_host.sh returned $status for a command that exited 7"
    expect_no_leftovers "$before"
    status=0
    bench/netem/shared_fabric.sh --rate 100mbit -- bash -c 'exit 5' || status=$?
    ((status == 5)) || fail "shared_fabric.sh returned $status for a command that exited 5"
    expect_no_leftovers "$before"
    # Terminated while the command runs: the command is stopped and the network removed.
    bench/netem/per_host.sh --hosts 2 --rate 100mbit -- bash -c "echo \$\$ >$work/inner.pid; ip netns list >$work/during; sleep 60" &
    outer=$!
    for ((i = 0; i < 100; i++)); do
      [[ -s $work/inner.pid ]] && break
      sleep 0.1
    done
    [[ -s $work/inner.pid ]] || fail "the command never started"
    grep -q twnet "$work/during" || fail "no namespace existed while the command ran"
    kill -TERM "$outer"
    status=0
    wait "$outer" || status=$?
    ((status != 0)) || fail "a terminated per_host.sh exited 0"
    ! kill -0 "$(cat "$work/inner.pid")" 2>/dev/null || fail "the command survived its network"
    expect_no_leftovers "$before"
    echo "PASS: failures are passed on and nothing is left behind" ;;

  shaping_is_applied)
    bench/netem/per_host.sh --hosts 3 --rate 150mbit -- bash -c '
      read -r -a namespaces <<<"$TW_NETEM_NAMESPACES"
      switch=${namespaces[0]%-h1}-sw
      for ns in "${namespaces[@]}"; do
        ip -n "$ns" -o addr show dev eth0 | grep -q "inet 10.77.0." || { echo "no address in $ns"; exit 1; }
        tc -n "$ns" qdisc show dev eth0 | grep -q "tbf .*rate 150Mbit" || { echo "eth0 of $ns not shaped"; exit 1; }
      done
      for i in 1 2 3; do
        tc -n "$switch" qdisc show dev p$i | grep -q "tbf .*rate 150Mbit" || { echo "port p$i not shaped"; exit 1; }
      done
      [[ $(wc -l <"$TW_NETEM_HOSTFILE") -eq 3 ]] || { echo "hostfile has the wrong length"; exit 1; }
      "$TW_NETEM_RSH_AGENT" 10.77.0.3 ip -o addr show dev eth0 | grep -q "inet 10.77.0.3/" ||
        { echo "rsh agent did not enter host 3"; exit 1; }
      ! "$TW_NETEM_RSH_AGENT" 10.77.0.9 true 2>/dev/null || { echo "rsh agent accepted an unknown host"; exit 1; }
    ' || fail "per-host network not as requested"
    bench/netem/shared_fabric.sh --rate 300mbit -- bash -c '
      tc qdisc show dev lo | grep -q "tbf .*rate 300Mbit" && [[ $(ip -o link show | wc -l) -eq 1 ]]
    ' || fail "shared fabric loopback not shaped, or not alone in its namespace"
    status=0
    bench/netem/per_host.sh --rate fast -- true 2>"$work/err" || status=$?
    ((status == 2)) && grep -q "rate" "$work/err" || fail "a bad --rate was not rejected clearly"
    echo "PASS: shaping as requested" ;;

  refuses_without_root)
    command -v setpriv >/dev/null || fail "setpriv (util-linux) not found"
    for script in per_host.sh shared_fabric.sh; do
      status=0
      setpriv --reuid=65534 --regid=65534 --clear-groups bash "bench/netem/$script" -- true \
        2>"$work/err" || status=$?
      ((status == 2)) || fail "$script as an unprivileged user exited $status, expected 2"
      grep -q "needs root" "$work/err" || fail "$script did not say it needs root: $(cat "$work/err")"
    done
    echo "PASS: unprivileged runs are refused with a message" ;;

  tcp_multihost_matches_single_host)
    before=$(network_objects)
    # `thinwire train` per rank with the variables srun would set; the job minus launch's -n 4.
    train=(train "${job[0]}" "${job[@]:3}" --set comm.backend=tcp --set comm.timeout_s=60)
    port=$((29500 + $$ % 1000))
    pids=()
    for rank in 0 1 2 3; do
      SLURM_PROCID=$rank SLURM_NTASKS=4 SLURM_LOCALID=$rank SLURM_NTASKS_PER_NODE=4 \
        THINWIRE_STORE=127.0.0.1:$port timeout 300 "$thinwire" "${train[@]}" \
        --set "run.output_dir=$work/single" >"$work/single.$rank.log" 2>&1 &
      pids+=($!)
    done
    for rank in 0 1 2 3; do
      wait "${pids[$rank]}" || { cat "$work/single.$rank.log"; fail "single-host rank $rank failed"; }
    done
    # One rank per host namespace, started with `ip netns exec` (no launcher in between); the
    # store is on host 1 (10.77.0.1), where rank 0 runs.
    timeout 300 bench/netem/per_host.sh --hosts 4 --rate 200mbit -- bash -c '
      thinwire=$1 work=$2 port=$3
      shift 3
      read -r -a namespaces <<<"$TW_NETEM_NAMESPACES"
      read -r -a addrs <<<"$TW_NETEM_ADDRS"
      pids=()
      for rank in 0 1 2 3; do
        ip netns exec "${namespaces[$rank]}" env SLURM_PROCID=$rank SLURM_NTASKS=4 SLURM_LOCALID=0 \
          SLURM_NODEID=$rank SLURM_NTASKS_PER_NODE=1 THINWIRE_STORE=${addrs[0]}:$port \
          timeout 240 "$thinwire" "$@" --set "run.output_dir=$work/multi" >"$work/multi.$rank.log" 2>&1 &
        pids+=($!)
      done
      rc=0
      for rank in 0 1 2 3; do
        wait "${pids[$rank]}" || { echo "rank $rank on ${addrs[$rank]} failed:"; cat "$work/multi.$rank.log"; rc=1; }
      done
      exit $rc
    ' _ "$thinwire" "$work" "$port" "${train[@]}" >"$work/multi.log" 2>&1 ||
      { cat "$work/multi.log"; fail "the 4-host tcp run failed"; }
    grep -q "4 ranks (tcp)" "$work/multi.0.log" || { cat "$work/multi.0.log"; fail "rank 0 did not report 4 tcp ranks"; }
    expect_same_run "4-host tcp"
    expect_no_leftovers "$before"
    echo "PASS: 4-host tcp checkpoint is byte-identical to the 1-host one; losses: $(echo $multi_losses)" ;;

  *) fail "unknown case '$case_name'" ;;
esac
