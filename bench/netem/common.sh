# Shared code of the network-emulation scripts (sourced, not run). See bench/netem/README.md.
#
# Every object these scripts create is named "twnet<PID>..." after the process that owns it, so
# netem_reap_stale can delete what a killed run left behind without touching anything else, and
# nothing is ever created or addressed outside the namespaces made here.

netem_die() {
  echo "netem: $*" >&2
  exit 2
}

# Emulation needs root (namespaces, qdiscs) and iproute2 (ip, tc). Says which is missing.
netem_require() {
  [[ $(id -u) -eq 0 ]] || netem_die "needs root (network namespaces and tc); not emulating, no result"
  command -v ip >/dev/null || netem_die "needs iproute2 ('ip' not found; scripts/install-deps.sh installs it)"
  command -v tc >/dev/null || netem_die "needs iproute2 ('tc' not found; scripts/install-deps.sh installs it)"
}

# Deletes namespaces "twnet<PID>-*" whose owning process no longer runs (a run killed by SIGKILL
# cannot clean up after itself). Veths and bridges live inside those namespaces and go with them.
netem_reap_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^twnet[0-9]*-' || true); do
    pid=${ns#twnet}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
      ip netns del "$ns" 2>/dev/null && echo "netem: removed stale namespace $ns" >&2
    fi
  done
  return 0
}

# netem_rate_ok RATE: accepts "none" or a tc rate such as 1gbit, 200mbit, 500kbit.
netem_rate_ok() {
  [[ $1 == none || $1 =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$ ]]
}

# netem_shape NS DEV RATE DELAY LOSS: egress shaping of DEV inside namespace NS. RATE "none"
# leaves the link unshaped. Delay and loss need the kernel's netem qdisc; where it is missing the
# run stops with a message instead of silently measuring an undelayed link.
netem_shape() {
  local ns=$1 dev=$2 rate=$3 delay=$4 loss=$5
  local parent=(root)
  if [[ $delay != 0 && $delay != 0ms ]] || [[ $loss != 0 && $loss != 0% ]]; then
    local args=()
    [[ $delay != 0 && $delay != 0ms ]] && args+=(delay "$delay")
    [[ $loss != 0 && $loss != 0% ]] && args+=(loss "$loss")
    ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: netem "${args[@]}" 2>/dev/null ||
      netem_die "this kernel has no netem qdisc (delay/loss emulation); rerun with --delay 0 --loss 0"
    parent=(parent 1:1 handle 10:)
  fi
  if [[ $rate != none ]]; then
    # burst: enough for a 64 KB TCP segment train at line rate; latency bounds the queue.
    ip netns exec "$ns" tc qdisc add dev "$dev" "${parent[@]}" tbf rate "$rate" burst 512kb latency 100ms ||
      netem_die "cannot add tbf rate $rate on $dev in $ns"
  fi
}

# Parses --rate/--delay/--loss (and --hosts where allowed) up to "--"; the rest is the command.
netem_parse() {
  NETEM_RATE=1gbit NETEM_DELAY=0 NETEM_LOSS=0 NETEM_HOSTS=4
  NETEM_CMD=()
  while (($#)); do
    case $1 in
      --rate) NETEM_RATE=${2:?--rate needs a value}; shift 2 ;;
      --delay) NETEM_DELAY=${2:?--delay needs a value}; shift 2 ;;
      --loss) NETEM_LOSS=${2:?--loss needs a value}; shift 2 ;;
      --hosts) NETEM_HOSTS=${2:?--hosts needs a value}; shift 2 ;;
      --) shift; NETEM_CMD=("$@"); break ;;
      -h|--help) netem_usage; exit 0 ;;
      *) netem_die "unknown option '$1' (see --help)" ;;
    esac
  done
  netem_rate_ok "$NETEM_RATE" || netem_die "--rate must be 'none' or a tc rate like 1gbit or 200mbit, got '$NETEM_RATE'"
  [[ $NETEM_DELAY =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)?$ ]] || netem_die "--delay must be like 5ms, got '$NETEM_DELAY'"
  [[ $NETEM_LOSS =~ ^[0-9]+(\.[0-9]+)?%?$ ]] || netem_die "--loss must be like 0.1%, got '$NETEM_LOSS'"
  [[ $NETEM_HOSTS =~ ^[0-9]+$ ]] && ((NETEM_HOSTS >= 1 && NETEM_HOSTS <= 64)) ||
    netem_die "--hosts must be 1..64, got '$NETEM_HOSTS'"
  ((${#NETEM_CMD[@]})) || netem_die "no command given (usage: ... -- COMMAND [ARGS...])"
}

# netem_wait_child PID: waits for the command started in the background and exits with its
# status. INT/TERM are passed on to it (then the EXIT trap removes the network), so an
# interrupted benchmark leaves neither processes nor namespaces behind.
netem_wait_child() {
  NETEM_CHILD=$1
  trap 'kill -TERM "$NETEM_CHILD" 2>/dev/null; wait "$NETEM_CHILD" 2>/dev/null; exit 143' INT TERM
  local status=0
  wait "$NETEM_CHILD" || status=$?
  exit "$status"
}
