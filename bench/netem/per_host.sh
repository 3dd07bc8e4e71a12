#!/usr/bin/env bash
# One-NIC-per-host network (model 2 of the benchmarking spec): --hosts network namespaces, each
# with one veth "eth0" into a bridge that lives in its own switch namespace, tbf of --rate on both
# directions of every port, addresses 10.77.0.1 ... only inside those namespaces. COMMAND runs
# inside host 1's namespace; everything is deleted when it ends, fails or is interrupted.
#
#   bench/netem/per_host.sh [--hosts 4] [--rate 1gbit|none] [--delay 0] [--loss 0] -- COMMAND...
#
# Exported to COMMAND:
#   TW_NETEM_MODE=perhost  TW_NETEM_IFACE=eth0  TW_NETEM_RATE
#   TW_NETEM_ADDRS         "10.77.0.1 10.77.0.2 ..." (host i = i-th word)
#   TW_NETEM_NAMESPACES    the namespaces, same order (`ip netns exec NS ...` starts a process
#                          on that host)
#   TW_NETEM_HOSTFILE      Open MPI hostfile, one host per line, slots=1 (TW_NETEM_SLOTS)
#   TW_NETEM_RSH_AGENT     stands in for ssh: `agent HOST CMD...` runs CMD in HOST's namespace
#   TW_NETEM_MPIRUN_ARGS   the mpirun options for this network: --hostfile, --mca plm_rsh_agent,
#                          TCP on eth0 for both MPI traffic and Open MPI's own out-of-band channel
# mpirun must be started here, in host 1, with those options (wrapping each rank in
# `ip netns exec` instead breaks PMIx start-up). Exit status: COMMAND's; 2 when emulation is
# impossible here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
netem_usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
netem_parse "$@"
netem_require
netem_reap_stale
slots=${TW_NETEM_SLOTS:-1}
[[ $slots =~ ^[0-9]+$ ]] && ((slots >= 1)) || netem_die "TW_NETEM_SLOTS must be >= 1, got '$slots'"

prefix=twnet$$
switch=$prefix-sw
work=$(mktemp -d /tmp/twnet$$.XXXXXX)
namespaces=()
cleanup() {
  local ns
  for ns in "${namespaces[@]}" "$switch"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$switch"
ip -n "$switch" link set lo up
ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
addrs=()
: >"$work/hostfile"
: >"$work/hosts.map"
for ((i = 1; i <= NETEM_HOSTS; i++)); do
  ns=$prefix-h$i
  addr=10.77.0.$i
  ip netns add "$ns"
  namespaces+=("$ns")
  ip -n "$switch" link add "p$i" type veth peer name eth0 netns "$ns"
  ip -n "$switch" link set "p$i" master br0
  ip -n "$switch" link set "p$i" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  netem_shape "$ns" eth0 "$NETEM_RATE" "$NETEM_DELAY" "$NETEM_LOSS"      # host -> switch
  netem_shape "$switch" "p$i" "$NETEM_RATE" "$NETEM_DELAY" "$NETEM_LOSS" # switch -> host
  addrs+=("$addr")
  echo "$addr slots=$slots" >>"$work/hostfile"
  echo "$addr $ns" >>"$work/hosts.map"
done

# The ssh stand-in. Open MPI calls it as `agent [ssh options] HOST COMMAND...` and, like ssh,
# expects COMMAND's words to be joined and run by a shell on HOST.
cat >"$work/rsh_agent" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do
  case "\$1" in -*) shift ;; *) break ;; esac
done
host=\$1
shift
ns=\$(awk -v h="\$host" '\$1 == h {print \$2}' "$work/hosts.map")
if [ -z "\$ns" ]; then
  echo "netem rsh agent: unknown host '\$host' (known: \$(awk '{print \$1}' "$work/hosts.map" | tr '\n' ' '))" >&2
  exit 255
fi
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$work/rsh_agent"

# Every host must reach every other before anything is measured. A TCP connect to the closed
# discard port is answered by a reset ("refused") when the path works; bounded at 5 s per pair.
for ((i = 1; i <= NETEM_HOSTS; i++)); do
  for ((j = 1; j <= NETEM_HOSTS; j++)); do
    ((i == j)) && continue
    probe=$(ip netns exec "$prefix-h$i" timeout 5 bash -c "exec 3<>/dev/tcp/10.77.0.$j/9" 2>&1 || true)
    [[ -z $probe || $probe == *refused* ]] || netem_die "host $i cannot reach 10.77.0.$j: $probe"
  done
done

echo "netem: $NETEM_HOSTS hosts (${addrs[*]}), ports rate $NETEM_RATE delay $NETEM_DELAY loss $NETEM_LOSS both directions; command runs on host 1" >&2
export TW_NETEM_MODE=perhost TW_NETEM_IFACE=eth0 TW_NETEM_RATE=$NETEM_RATE
export TW_NETEM_ADDRS="${addrs[*]}" TW_NETEM_NAMESPACES="${namespaces[*]}"
export TW_NETEM_HOSTFILE=$work/hostfile TW_NETEM_RSH_AGENT=$work/rsh_agent
export TW_NETEM_MPIRUN_ARGS="--hostfile $work/hostfile --mca plm_rsh_agent $work/rsh_agent --mca rtc ^hwloc --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0"
ip netns exec "${namespaces[0]}" "${NETEM_CMD[@]}" &
netem_wait_child $!
