#!/usr/bin/env bash
# Shared-fabric network (model 1 of the benchmarking spec): runs COMMAND in a new network
# namespace whose loopback is rate-limited with tbf, so every byte between ranks on this machine
# crosses one queue of --rate (allreduce bandwidth comes out near rate/n). The namespace is
# deleted when COMMAND ends, fails or the script is interrupted.
#
#   bench/netem/shared_fabric.sh [--rate 1gbit|none] [--delay 0] [--loss 0] -- COMMAND [ARGS...]
#
# Inside, loopback is the only interface: start Open MPI with
#   --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
# (Open MPI otherwise uses shared memory and no byte touches the shaper), gloo with
# GLOO_SOCKET_IFNAME=lo. Exported to COMMAND: TW_NETEM_MODE=shared, TW_NETEM_IFACE=lo,
# TW_NETEM_RATE. Exit status: COMMAND's; 2 when emulation is impossible here (not root, no
# iproute2, delay/loss without the netem qdisc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
netem_usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
netem_parse "$@"
netem_require
netem_reap_stale

ns=twnet$$-fabric
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
netem_shape "$ns" lo "$NETEM_RATE" "$NETEM_DELAY" "$NETEM_LOSS"
echo "netem: shared fabric, namespace $ns, loopback rate $NETEM_RATE delay $NETEM_DELAY loss $NETEM_LOSS" >&2
TW_NETEM_MODE=shared TW_NETEM_IFACE=lo TW_NETEM_RATE=$NETEM_RATE \
  ip netns exec "$ns" "${NETEM_CMD[@]}" &
netem_wait_child $!
